"""Iteration 0 computed once (llm2llm/iteration0.py): real tiny boosts through the CLI that share, or
must not share, their plain fine-tuned student and its scores."""

import json
import subprocess
import sys

from conftest import REPO, cli_in_process, read_jsonl, tiny_boost_args

SHARE = ("--set", "loop.share_iteration0=true")  # the tiny profile leaves it off for the other tests


def boost(tmp_path, data_dir, run, *extra):
    return cli_in_process(*tiny_boost_args(tmp_path, data_dir, run, "--iterations", "1", *SHARE, *extra), cwd=REPO)


def iteration0(tmp_path, run):
    it0 = tmp_path / "runs" / run / "iter_000"
    shared = json.loads((it0 / "shared.json").read_text())
    scores = json.loads((it0 / "scores.json").read_text())
    trained = [r for r in read_jsonl(tmp_path / "runs" / run / "phases.jsonl") if r["key"] == "train iter_000"]
    return shared, scores, trained


def test_a_second_method_on_the_same_seed_reuses_iteration_0_with_the_same_numbers(tmp_path, data_dir, tiny_model):
    boost(tmp_path, data_dir, "first")
    boost(tmp_path, data_dir, "second", "--method", "auggpt", "--set", "teacher.per_wrong=1")
    boost(tmp_path, data_dir, "fresh", "--method", "auggpt", "--set", "loop.share_iteration0=false")  # last wins
    first, first_scores, first_trained = iteration0(tmp_path, "first")
    second, second_scores, second_trained = iteration0(tmp_path, "second")
    assert first["reused"] is False and first["published"] is True and len(first_trained) == 1
    assert second == {"key": first["key"], "reused": True, "source_run": "first"} and second_trained == []
    # what the second run scores and hands over is the first run's iteration 0, student included
    assert second_scores == first_scores
    student = tmp_path / "runs" / "second" / "iter_000" / "student"
    assert sorted(p.name for p in student.iterdir()) == sorted(
        p.name for p in (tmp_path / "runs" / "first" / "iter_000" / "student").iterdir()
    )
    # a run that computes its own gets the same numbers (training and decoding are deterministic here)
    fresh_scores = json.loads((tmp_path / "runs" / "fresh" / "iter_000" / "scores.json").read_text())
    assert not (tmp_path / "runs" / "fresh" / "iter_000" / "shared.json").exists()
    assert fresh_scores["test"] == first_scores["test"] and fresh_scores["seed"] == first_scores["seed"]
    metrics = json.loads((tmp_path / "runs" / "second" / "metrics.json").read_text())
    assert metrics["iteration0"]["source_run"] == "first"
    assert (
        "iteration 0 (plain fine-tuning): reused from run `first`"
        in (tmp_path / "runs" / "second" / "report.md").read_text()
    )
    # another training recipe or another seed sample is another iteration 0
    boost(tmp_path, data_dir, "other-lr", "--set", "train.learning_rate=0.002")
    boost(tmp_path, data_dir, "other-seed", "--rng-seed", "1")
    keys = {iteration0(tmp_path, run)[0]["key"] for run in ("first", "other-lr", "other-seed")}
    assert len(keys) == 3
    assert all(not iteration0(tmp_path, run)[0]["reused"] for run in ("other-lr", "other-seed"))


def test_concurrent_runs_with_one_iteration_0_train_it_once(tmp_path, data_dir, tiny_model):
    """Two boosts started together with the same iteration 0: one trains it, the other waits and reuses it."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launcher.cli",
                *tiny_boost_args(
                    tmp_path, data_dir, run, "--iterations", "1", *SHARE, "--set", f"teacher.per_wrong={k}"
                ),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for run, k in (("a", 1), ("b", 2))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    (a, a_scores, a_trained), (b, b_scores, b_trained) = iteration0(tmp_path, "a"), iteration0(tmp_path, "b")
    assert sorted([a["reused"], b["reused"]]) == [False, True] and len(a_trained) + len(b_trained) == 1
    assert a_scores == b_scores and a["key"] == b["key"]


def test_balanced_labels_train_on_repeats_and_reuse_an_iteration_0_they_would_not_change(
    tmp_path, data_dir, tiny_model
):
    """train.balance_labels: the student trains on a label-balanced copy of train.jsonl (train_log's
    example count), the run is a variant of its own, and a seed sample balanced already (2 per SNIPS
    intent) shares iteration 0 with runs that have the switch off; an unbalanced one does not."""
    boost(tmp_path, data_dir, "plain-set")
    boost(tmp_path, data_dir, "balanced", "--train-balance-labels", "true")
    shared, _, trained = iteration0(tmp_path, "balanced")
    assert shared["reused"] is True and shared["source_run"] == "plain-set" and trained == []
    run = tmp_path / "runs" / "balanced"
    train = read_jsonl(run / "iter_001" / "train.jsonl")
    counts = {}
    for example in train:
        counts[example["label"]] = counts.get(example["label"], 0) + 1
    log = json.loads((run / "iter_001" / "student" / "train_log.json").read_text())
    assert log["examples"] == max(counts.values()) * len(counts) > len(train)  # the teacher's examples skew it
    metrics = json.loads((run / "metrics.json").read_text())
    assert "balanced labels" in metrics["variant"] and metrics["iterations"][1]["train_size"] == len(train)
    # 15 seed examples over 7 intents are not balanced: the switch is then part of iteration 0's key
    boost(tmp_path, data_dir, "odd", "--seed-size", "15")
    boost(tmp_path, data_dir, "odd-balanced", "--seed-size", "15", "--train-balance-labels", "true")
    assert iteration0(tmp_path, "odd")[0]["key"] != iteration0(tmp_path, "odd-balanced")[0]["key"]
    assert not iteration0(tmp_path, "odd-balanced")[0]["reused"]
