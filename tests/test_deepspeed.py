"""Student training under real DeepSpeed ZeRO with 2 processes (torchrun, gloo on CPU) through the
same launcher code a GPU node uses; the trained student evaluates through the normal path."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_in_process, read_jsonl, tiny_boost_args
from safetensors import safe_open

from bench.gpu_check import results_entry, run_figures
from bench.table import render
from llm2llm.config import DEEPSPEED_DIR, deepspeed_config_path
from llm2llm.runtime.phases import free_port

pytest.importorskip("deepspeed")


def ds_boost(tmp_path, data_dir, run, *extra):
    return cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, run),
        "--set",
        "train.cpu_processes=2",
        "--set",
        "loop.keep_checkpoints=true",
        *extra,
        cwd=REPO,
    )


def tensors(folder: Path) -> dict[str, tuple]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def parameters(folder: Path) -> int:
    return sum(math.prod(shape) for shape in tensors(folder).values())


def assert_complete_model(student: Path, base: Path) -> None:
    """Every tensor of the base at its full shape (a DeepSpeed save may also write the tied lm_head)."""
    saved, expected = tensors(student), tensors(base)
    assert {k: saved.get(k) for k in expected} == expected


def fill_auto(node, key=None):
    """Stand-ins for the values the Trainer fills in ("auto"), for one process, fp32."""
    if isinstance(node, dict):
        return {k: fill_auto(v, k) for k, v in node.items()}
    if node != "auto":
        return node
    return {"enabled": False, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "lr": 1e-4}.get(key, 1)


def test_presets_are_valid_deepspeed_configs():
    from deepspeed.runtime.config import DeepSpeedConfig

    presets = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
    assert {"zero2", "zero3", "zero3_offload"} <= set(presets)
    for name in presets:
        config = json.loads(deepspeed_config_path(name).read_text())
        # the "auto" fields are what the HF Trainer fills; with them filled DeepSpeed accepts the file
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            assert config[key] == "auto"
        parsed = DeepSpeedConfig(fill_auto(config))
        assert parsed.zero_optimization_stage == config["zero_optimization"]["stage"]


def test_zero2_boost_with_two_processes(tmp_path, data_dir, tiny_model):
    ds_boost(tmp_path, data_dir, "z2", "--deepspeed", "zero2", "--iterations", "1")
    run = tmp_path / "runs" / "z2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["training"]["deepspeed"] == "zero2"
    for it in ("iter_000", "iter_001"):
        log = json.loads((run / it / "train_log.json").read_text())
        assert log["world_size"] == 2 and log["deepspeed"] == "zero2"
        assert all(abs(h["loss"]) < 100 for h in log["log_history"] if "loss" in h)
        # both ranks ran: torchrun started two workers in the phase's log
        text = (run / "logs" / f"train-{it}.log").read_text()
        assert "--nproc-per-node=2" in text and "trained on" in text
    # the ZeRO-2 student is a complete model folder that loads like the base
    assert_complete_model(run / "iter_001" / "student", tiny_model)
    # every phase ran in its own process and its release was checked before the next started
    phases = metrics["phases"]
    assert [p["key"] for p in phases] == [
        "train iter_000",
        "evaluate iter_000",
        "generate iter_000",
        "train iter_001",
        "evaluate iter_001",
    ]
    assert all(p["exit_code"] == 0 and p["checked"] == "processes" and p["leftovers_killed"] == [] for p in phases)
    assert all(p["switch_seconds"] is not None for p in phases[1:])
    assert "sequential" in (run / "plan.txt").read_text() and "ZeRO-2 (zero2), gloo" in (run / "plan.txt").read_text()
    # what the GPU acceptance check (bench/gpu_check.py) reads off a run, here on the CPU
    figures = run_figures(run, "CPU")
    assert figures["complete"] and figures["release_checks"] == ["processes"]
    assert [t["iteration"] for t in figures["training"]] == ["iter_000", "iter_001"]
    for t in figures["training"]:
        assert t["parameters"] == parameters(tiny_model) and t["world_size"] == 2 and t["deepspeed"] == "zero2"
        assert t["tokens"] > 10 * t["examples"] and t["tokens_per_s_per_gpu"] > 0 and t["mfu"] is None  # no peak
    assert figures["generation"][0]["completion_tokens"] > 0 and figures["phase_switch_seconds"]["max"] >= 0
    row = render({"gpu_zero2": {**results_entry(figures, "CPU", "zero2"), "measured": "now"}}).splitlines()[-1]
    assert row.startswith("| gpu_zero2 | ") and "training tokens/s/GPU" in row and "release processes" in row


def test_zero3_with_gradient_checkpointing_is_gathered_and_evaluates(tmp_path, data_dir, tiny_model):
    ds_boost(
        tmp_path,
        data_dir,
        "z3",
        "--deepspeed",
        "zero3",
        "--iterations",
        "0",
        "--set",
        "train.gradient_checkpointing=true",
    )
    student = tmp_path / "runs" / "z3" / "iter_000" / "student"
    # the shards were gathered on save: every tensor has its full shape, none is an empty partition
    assert_complete_model(student, tiny_model)
    log = json.loads((student / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["gradient_checkpointing"]
    assert log["parameters"] == parameters(tiny_model)  # counted in full from ZeRO-3's partitions
    scores = json.loads((student.parent / "scores.json").read_text())
    # 20 test, 20 validation (as many as test by default) and the 14 seed examples, one answer each
    assert scores["test"]["total"] == 20 and scores["validation"]["total"] == 20
    assert len(read_jsonl(student.parent / "predictions.jsonl")) == 20 + 20 + 14


def test_lora_with_checkpointing_under_zero3_offload_evaluates_as_base_plus_adapter(tmp_path, data_dir, tiny_model):
    ds_boost(
        tmp_path,
        data_dir,
        "off",
        "--deepspeed",
        "zero3_offload",
        "--iterations",
        "0",
        "--set",
        "train.lora=true",
        "--set",
        "train.gradient_checkpointing=true",
    )
    adapter = tmp_path / "runs" / "off" / "iter_000" / "student"
    log = json.loads((adapter / "train_log.json").read_text())
    assert (
        log["deepspeed"] == "zero3_offload"
        and log["world_size"] == 2
        and log["lora"]
        and log["gradient_checkpointing"]
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] and config["r"] == 16
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        shapes = [tuple(f.get_slice(k).get_shape()) for k in f.keys()]
    assert shapes and all(0 not in s for s in shapes)  # gathered, not empty ZeRO-3 partitions
    assert json.loads((adapter.parent / "scores.json").read_text())["test"]["total"] == 20


def test_unknown_preset_is_refused_before_anything_runs(tmp_path, data_dir):
    proc = cli_in_process(
        "boost",
        "--profile",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--deepspeed",
        "zero9",
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2
    assert "train.deepspeed 'zero9'" in proc.stderr and "zero2, zero3, zero3_offload" in proc.stderr
    assert not (tmp_path / "runs").exists()


STAND_IN_SRUN = """#!{python}
# srun as a two-node allocation would run it: its command once per node (here: twice on this host,
# SLURM_NODEID 0 and 1), waiting for both; its own argument list is kept for the test.
import json, os, subprocess, sys
args = sys.argv[1:]
nodes = int(next(a.split("=", 1)[1] for a in args if a.startswith("--nodes=")))
command = args[next(i for i, a in enumerate(args) if not a.startswith("--")):]
with open(os.environ["SRUN_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
env = lambda n: dict(os.environ, SLURM_NODEID=str(n), SLURM_PROCID=str(n), SLURM_LOCALID="0")
procs = [subprocess.Popen(command, env=env(n)) for n in range(nodes)]
sys.exit(max(p.wait() for p in procs))
"""


def test_zero2_trains_across_two_nodes_through_the_slurm_command_line(tmp_path, data_dir, tiny_model, monkeypatch):
    """plan.nodes=2 inside a Slurm allocation: the training phase's real command line (srun, one torchrun
    per node, a c10d rendezvous at the first node) runs as two "nodes" on this machine; ZeRO-2 over their
    ranks (gloo) saves a student that the evaluation phase loads."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(STAND_IN_SRUN.format(python=sys.executable))
    # the allocation's first node, as `scontrol show hostnames $SLURM_JOB_NODELIST` names it
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[01-02]")
    monkeypatch.setenv("SRUN_RECORD", str(tmp_path / "srun.jsonl"))
    ds_boost(tmp_path, data_dir, "nodes", "--deepspeed", "zero2", "--set", "train.cpu_processes=1",
             "--set", "plan.nodes=2", "--iterations", "0")  # fmt: skip
    run = tmp_path / "runs" / "nodes"
    [argv] = [json.loads(line) for line in (tmp_path / "srun.jsonl").read_text().splitlines()]
    assert argv[1:5] == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--export=ALL"]
    assert "--nnodes=2" in argv and "--nproc-per-node=1" in argv and "--rdzv-backend=c10d" in argv
    assert any(a.startswith("--rdzv-endpoint=127.0.0.1:") for a in argv)
    log = json.loads((run / "iter_000" / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["deepspeed"] == "zero2"  # one rank on each "node"
    assert_complete_model(run / "iter_000" / "student", tiny_model)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["iterations"][0]["test_total"] > 0  # the evaluation loaded it
    assert "cpu on each of 2 nodes" in (run / "plan.txt").read_text()


def test_the_gpu_checks_training_step_runs_on_the_cpu_and_writes_each_figure(tmp_path):
    """bench/gpu_train.py, what the GPU check runs per ZeRO stage, through torchrun on this CPU (gloo,
    fp32, the tiny shape): the training figure with the plan's estimate, then for ZeRO-3 the round trip
    (greedy answers of the trained student equal those of the folder save_model gathered) and the load."""
    out = tmp_path / "out"
    for zero, extra in (("zero2", []), ("zero3", ["--round-trip"])):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--nnodes=1",
             "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(REPO / "bench" / "gpu_train.py"),
             "--shape", "tiny", "--zero", zero, "--checkpointing", "1", "--steps", "4", "--batch", "2",
             "--seq", "32", "--out", str(out), *extra],
            cwd=REPO, env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = [json.loads(line) for line in (out / "figures.jsonl").read_text().splitlines()]
    assert [(f["figure"], f["config"]) for f in figures] == [
        ("train", "zero2-ckpt"), ("train", "zero3-ckpt"), ("load", "zero3-ckpt"), ("round_trip", "zero3-ckpt")
    ]  # fmt: skip
    for f in figures[:2]:
        assert f["timed_steps"] == 2 and f["tokens_per_s_per_gpu"] > 0 and f["world_size"] == 1
        assert f["plan_estimate_gib"] is not None and f["mfu"] is None  # no GPU peak on a CPU
    assert figures[2]["bytes"] > 4 * figures[0]["parameters"] * 0.9 and figures[2]["gb_per_s"] > 0
    assert figures[3]["equal"] is True
