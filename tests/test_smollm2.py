"""The quick-look profile cpu-smollm2 (SmolLM2-135M-Instruct as student and teacher) on a small SNIPS slice:
real language, real learning, a valid report. About 90 s on 2 cores."""

import json

import pytest
from conftest import REPO, read_jsonl, run_cli


@pytest.mark.slow
def test_default_profile_produces_a_valid_report(tmp_path, data_dir, smollm2):
    run_cli(
        "boost",
        "--profile",
        "cpu-smollm2",
        "--dataset",
        "snips",
        "--seed-size",
        "14",
        "--iterations",
        "1",
        "--runs-dir",
        str(tmp_path),
        "--run",
        "smol",
        "--data-dir",
        str(data_dir),
        "--set",
        "data.test_size=40",
        # 2 epochs at twice the profile's learning rate: 4 optimiser steps per training instead of 10 (about
        # 4.5 s each on 2 cores; this test's cost), and still well clear of the bounds below (47.5 % test accuracy).
        "--set",
        "train.epochs=2",
        "--set",
        "train.learning_rate=2e-4",
        cwd=REPO,
    )
    run = tmp_path / "smol"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and [it["iteration"] for it in metrics["iterations"]] == [0, 1]
    first = metrics["iterations"][0]
    # 14 examples (2 per intent) teach the label format: most answers are valid labels, well above chance (1/7).
    assert first["test_invalid"] < 20 and first["test_accuracy"] > 0.25, first
    # The teacher's continuations parse into labelled requests; what is kept joins the next training set.
    decisions = read_jsonl(run / "iter_000" / "filter_decisions.jsonl")
    assert len(decisions) == 4 * first["seed_wrong"]
    parsed = [d for d in decisions if d["reason"] != "unparsable"]
    assert first["seed_wrong"] == 0 or parsed
    assert metrics["iterations"][1]["train_size"] == 14 + first["kept"]
    report = (run / "report.md").read_text()
    assert "| 0 | 14 |" in report and "snips" in report
