"""A training phase survives preemption (issue 28): it saves resumable checkpoints (the last one kept),
a kill -9 in its middle followed by the same command resumes from the last one, retrains only the
steps after it, and ends with the same student, to the bit, as a run never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, run_cli, tiny_boost_args

STEPS = 80  # 14 seed examples, batch 8: 2 steps an epoch
EVERY = 10


def boost_args(tmp_path: Path, data_dir: Path, runs: str) -> list[str]:
    return tiny_boost_args(
        tmp_path / runs,
        data_dir,
        "r",
        "--set", "loop.iterations=0",
        "--set", f"train.epochs={STEPS // 2}",
        "--set", f"train.checkpoint_steps={EVERY}",
    )  # fmt: skip


def test_a_training_phase_killed_mid_way_resumes_from_its_last_checkpoint(tmp_path, data_dir):
    run_cli(*boost_args(tmp_path, data_dir, "whole"), cwd=tmp_path)
    whole = tmp_path / "whole" / "runs" / "r" / "iter_000"
    assert json.loads((whole / "student" / "train_log.json").read_text())["resumed_from_step"] is None
    assert not (whole / "student-checkpoints").exists()  # a finished phase keeps nothing to resume

    # the same run killed with SIGKILL once its training has saved a checkpoint past the first
    argv = [sys.executable, "-m", "launcher.cli", *boost_args(tmp_path, data_dir, "killed")]
    proc = subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = tmp_path / "killed" / "runs" / "r" / "iter_000" / "student-checkpoints"
    deadline = time.monotonic() + 600
    while not [
        p
        for p in folder.glob("checkpoint-*")
        if (p / "trainer_state.json").exists() and p.name != f"checkpoint-{EVERY}"
    ]:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before a second checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sorted(folder.glob("checkpoint-*"))
    assert all(not (p / "training_args.bin").exists() for p in kept)  # no pickled arguments left beside them
    # a save the kill cut off (its trainer_state.json, written last, missing): dropped, not resumed from
    cut = folder / f"checkpoint-{STEPS - 1}"
    shutil.copytree(kept[-1], cut)
    (cut / "trainer_state.json").unlink()

    run_cli(*boost_args(tmp_path, data_dir, "killed"), cwd=tmp_path)  # the same command again
    resumed = tmp_path / "killed" / "runs" / "r" / "iter_000"
    log = json.loads((resumed / "student" / "train_log.json").read_text())
    assert log["resumed_from_step"] is not None and EVERY < log["resumed_from_step"] < STEPS
    # only the steps after the checkpoint were trained again
    assert log["steps_this_attempt"] == STEPS - log["resumed_from_step"]
    assert max(entry["step"] for entry in log["log_history"]) == STEPS
    assert (resumed / "student" / "model.safetensors").read_bytes() == (
        whole / "student" / "model.safetensors"
    ).read_bytes()
    assert json.loads((resumed / "scores.json").read_text()) == json.loads((whole / "scores.json").read_text())
    assert not (resumed / "student-checkpoints").exists()
    assert int(kept[-1].name.split("-")[1]) == log["resumed_from_step"]
