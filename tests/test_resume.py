"""A training phase survives preemption (issue 28): it saves resumable checkpoints (the last one kept),
a kill -9 in its middle followed by the same command resumes from the last one, retrains only the
steps after it, and ends with the same student, to the bit, as a run never interrupted. A SIGTERM
(preemption, Slurm's time-limit warning) saves one more at the step it arrives in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_boost_args

STEPS = 80  # 14 seed examples, batch 8: 2 steps an epoch
EVERY = 10


def boost_args(tmp_path: Path, data_dir: Path, runs: str, every: int = EVERY) -> list[str]:
    return tiny_boost_args(
        tmp_path / runs,
        data_dir,
        "r",
        "--set", "loop.iterations=0",
        "--set", f"train.epochs={STEPS // 2}",
        "--set", f"train.checkpoint_steps={every}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_dir) -> Path:
    """Iteration 0 of the run never interrupted."""
    tmp_path = tmp_path_factory.mktemp("whole")
    run_cli(*boost_args(tmp_path, data_dir, "whole"), cwd=tmp_path)
    whole = tmp_path / "whole" / "runs" / "r" / "iter_000"
    assert json.loads((whole / "student" / "train_log.json").read_text())["resumed_from_step"] is None
    assert not (whole / "student-checkpoints").exists()  # a finished phase keeps nothing to resume
    return whole


def test_a_training_phase_killed_mid_way_resumes_from_its_last_checkpoint(whole, tmp_path, data_dir):

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


def test_sigterm_saves_a_checkpoint_at_the_step_it_arrives_in_and_the_rerun_resumes_from_it(whole, tmp_path, data_dir):
    # No periodic checkpoint at all (checkpoint_steps 0, the tiny profile's checkpoint_minutes is 30):
    # whatever checkpoint there is after the SIGTERM was saved for it.
    args = boost_args(tmp_path, data_dir, "stopped", every=0)
    argv = [sys.executable, "-m", "launcher.cli", *args]
    proc = subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "stopped" / "runs" / "r"
    deadline = time.monotonic() + 600
    phase_log = run / "logs" / "train-iter_000.log"
    while not (phase_log.exists() and "'loss'" in phase_log.read_text()):  # the Trainer logs every step
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it was stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to llm2llm, as Slurm or kill would: it passes it on to the phase
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "stopped by SIGTERM after step" in phase_log.read_text(), phase_log.read_text()[-3000:] + err.decode()
    saved = [p for p in (run / "iter_000" / "student-checkpoints").glob("checkpoint-*")]
    assert len(saved) == 1 and (saved[0] / "trainer_state.json").exists(), saved
    step = int(saved[0].name.split("-")[1])
    assert 0 < step < STEPS
    assert not (run / "iter_000" / "student").exists()  # nothing handed over from a stopped phase

    run_cli(*args, cwd=tmp_path)  # the same command again
    log = json.loads((run / "iter_000" / "student" / "train_log.json").read_text())
    assert log["resumed_from_step"] == step and log["steps_this_attempt"] == STEPS - step
    assert (run / "iter_000" / "student" / "model.safetensors").read_bytes() == (
        whole / "student" / "model.safetensors"
    ).read_bytes()
