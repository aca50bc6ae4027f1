"""`llm2llm sweep` without Slurm: presets expand, bad sweep files fail before any work, runs go one
after another and a rerun does nothing. (Under Slurm: tests/test_slurm.py.)"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, run_cli

PRESETS = sorted(p.stem for p in (REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_preset_expands(preset, tmp_path):
    spec = yaml.safe_load((REPO / "configs" / "sweeps" / f"{preset}.yaml").read_text())
    out = run_cli("sweep", preset, "--dry-run", cwd=REPO).stdout.splitlines()
    expected = (
        len(spec["datasets"])
        * len(spec.get("teachers") or [None])
        * len(spec.get("seed_sizes") or [None])
        * len(spec["seeds"])
        * len(spec["methods"])
    )
    assert len(out) == expected and all("llm2llm boost --profile " + spec["profile"] in line for line in out)


def test_sweep_runs_in_order_and_a_rerun_writes_nothing(tmp_path, tiny_model, data_dir):
    spec = tmp_path / "two.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "profile": "tiny",
                "datasets": ["snips"],
                "seeds": [0, 1],
                "methods": ["plain"],
                "runs_dir": str(tmp_path / "runs"),
                "set": {"data.data_dir": str(data_dir)},
            }
        )
    )
    out = run_cli("sweep", str(spec), cwd=REPO).stdout
    assert "[1/2] snips-seed0-plain: starting" in out and "[2/2] snips-seed1-plain: starting" in out
    runs = tmp_path / "runs"
    for seed in (0, 1):
        metrics = json.loads((runs / f"snips-seed{seed}-plain" / "metrics.json").read_text())
        assert metrics["complete"] and metrics["data_seed"] == seed and metrics["method"] == "plain"
    summary = (runs / "summary" / "compare.md").read_text()
    assert "| snips | plain | 14 | 0, 1 |" in summary
    page = (runs / "summary" / "compare.html").read_text()  # the same page, linking each run's own
    assert all(f'<a href="../snips-seed{seed}-plain/report.html">' in page for seed in (0, 1))
    assert json.loads((runs / "summary" / "runs.json").read_text()) == {
        "snips-seed0-plain": "finished",
        "snips-seed1-plain": "finished",
    }

    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    out = run_cli("sweep", str(spec), cwd=REPO).stdout
    assert out.count("finished, skipped") == 2 and "starting" not in out
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "content, message",
    [
        ({"datasets": ["snips"], "teacher": ["x"]}, "unknown key 'teacher'"),
        ({"datasets": []}, "datasets: List should have at least 1 item"),
        (
            {"methods": ["llm2llm", "magic"]},
            "methods.1: Input should be 'llm2llm', 'plain', 'one-shot', 'auggpt' or 'eda'",
        ),
        ({"datasets": ["snips"], "teachers": ["/no/such/teacher"]}, "model folder /no/such/teacher does not exist"),
        ({"datasets": ["nope"]}, "unknown dataset 'nope'"),
        ({"set": {"train.epochz": 1}}, "unknown key 'train.epochz'"),
        ({"seeds": [0, 0]}, "two runs would both be named snips-seed0-llm2llm"),
    ],
)
def test_bad_sweep_file_fails_in_one_line_before_any_run(tmp_path, tiny_model, content, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"profile": "tiny", "runs_dir": str(tmp_path / "runs"), **content}))
    proc = run_cli("sweep", str(spec), cwd=REPO, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_sweep_name_lists_the_presets():
    proc = run_cli("sweep", "nope", cwd=REPO, check=False)
    assert proc.returncode == 2 and "unknown sweep 'nope'" in proc.stderr and ", ".join(PRESETS) in proc.stderr
    proc = run_cli("sweep", "/no/such/sweep.yaml", cwd=REPO, check=False)
    assert proc.returncode == 2 and "sweep file /no/such/sweep.yaml not found" in proc.stderr


def test_readme_batch_commands_are_the_make_targets():
    import subprocess

    def dry(*args):
        return " ".join(
            subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        )

    assert "llm2llm sweep methods --slurm" in dry("sweep", "SWEEP=methods", "SLURM=1")
    assert "llm2llm sweep tiny" in dry("sweep")
    assert "llm2llm doctor --profile cpu-qwen --dataset snips --teacher /models/t" in dry(
        "doctor", "DATASET=snips", "TEACHER=/models/t"
    )
    assert "--no-index --find-links /w" in dry("install-offline", "WHEELHOUSE=/w")
