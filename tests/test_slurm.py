"""Sweeps and preemption under a real Slurm: a one-node cluster on localhost (tests/localslurm.py)
runs the tiny sweep (2 data sets x 2 teacher folders); a rerun of the same command does no work;
a job sent SIGTERM and requeued resumes its run with nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, read_jsonl, run_cli
from localslurm import LocalSlurm, missing_binaries

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_binaries()
    if missing or os.geteuid() != 0:
        why = (
            f"missing {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)"
            if missing
            else "needs root"
        )
        if os.environ.get("LLM2LLM_REQUIRE_SLURM") == "1":
            pytest.fail(f"the Slurm tests cannot run: {why}")
        pytest.skip(why)
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def write_sweep(path: Path, runs_dir: Path, **changes) -> Path:
    spec = yaml.safe_load((REPO / "configs" / "sweeps" / "tiny.yaml").read_text())
    spec.update(runs_dir=str(runs_dir), **changes)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def tiny_sweep(slurm, tmp_path_factory, tiny_model, data_dir):
    from llm2llm.models import provision

    provision("tiny-llama-b")
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_sweep(folder / "tiny.yaml", folder / "runs")
    proc = run_cli("sweep", str(spec), "--slurm", "--wait", cwd=REPO, timeout=1500)
    return spec, folder / "runs", proc


def unique(records: list[dict], key: str) -> bool:
    values = [r[key] for r in records]
    return len(values) == len(set(values))


def test_sweep_runs_every_combination_under_slurm(tiny_sweep):
    _, runs_dir, proc = tiny_sweep
    assert proc.stdout.count("submitted job") == 4 and "summary job" in proc.stdout
    runs = sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").exists())
    assert [p.name for p in runs] == [
        "snips-tiny-llama-b-seed0-llm2llm",
        "snips-tiny-llama-seed0-llm2llm",
        "trec-tiny-llama-b-seed0-llm2llm",
        "trec-tiny-llama-seed0-llm2llm",
    ]
    fingerprints = {}
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["complete"] and len(metrics["iterations"]) == 2
        assert list((run / "logs").glob("slurm-*.out")), "the job wrote its log into the run"
        models = json.loads((run / "models.json").read_text())
        assert metrics["teacher_fingerprint"] == models["teacher"]["fingerprint"]
        fingerprints.setdefault(models["teacher"]["name"], set()).add(models["teacher"]["fingerprint"])
        outputs = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
        assert {o["teacher_fingerprint"] for o in outputs} == {models["teacher"]["fingerprint"]}
    assert set(fingerprints) == {"tiny-llama", "tiny-llama-b"}
    assert fingerprints["tiny-llama"] != fingerprints["tiny-llama-b"] and all(
        len(v) == 1 for v in fingerprints.values()
    )
    summary = (runs_dir / "summary" / "compare.md").read_text()  # written by the summary job
    assert "| teacher |" in summary and summary.count("| llm2llm | tiny-llama") == 4
    assert (runs_dir / "summary" / "compare.png").stat().st_size > 0


def test_rerunning_a_finished_sweep_does_no_work(tiny_sweep):
    spec, runs_dir, _ = tiny_sweep
    before = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*") if p.is_file()}
    proc = run_cli("sweep", str(spec), "--slurm", cwd=REPO, timeout=300)
    assert proc.stdout.count("finished, skipped") == 4 and "submitted" not in proc.stdout
    assert subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout.strip() == ""
    after = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*") if p.is_file()}
    assert after == before, "a rerun of a finished sweep must not write anything"


def test_sigterm_and_requeue_resume_the_run_with_nothing_duplicated(slurm, tiny_sweep, tmp_path):
    _, reference_runs, _ = tiny_sweep
    spec = write_sweep(tmp_path / "one.yaml", tmp_path / "runs", datasets=["snips"], teachers=["tiny-llama"])
    proc = run_cli("sweep", str(spec), "--slurm", cwd=REPO, timeout=300)
    job_id = proc.stdout.split("submitted job ")[1].split()[0]
    run = tmp_path / "runs" / "snips-tiny-llama-seed0-llm2llm"

    # Wait until iteration 0's training is done and the next phase is running, then preempt.
    deadline = time.monotonic() + 600
    while not ((run / "timings.jsonl").exists() and '"0/train"' in (run / "timings.jsonl").read_text()):
        assert time.monotonic() < deadline and slurm.job(job_id)["JobState"] in ("PENDING", "RUNNING"), slurm.job(
            job_id
        )
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # SIGTERM to the job, then back to the queue
    while slurm.job(job_id)["JobState"] != "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert not (run / "metrics.json").exists() or not json.loads((run / "metrics.json").read_text())["complete"]
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)  # skip the requeue delay
    while slurm.job(job_id)["JobState"] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"):
        assert time.monotonic() < deadline
        time.sleep(1)
    job = slurm.job(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job

    log = (run / "log.txt").read_text()
    assert log.count("snips, 14 seed examples") == 2, "two attempts: the preempted job and the requeued one"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"]
    # Nothing duplicated: every record once.
    for name, key in (
        ("timings.jsonl", "key"),
        ("phases.jsonl", "key"),
        ("iter_000/predictions.jsonl", "key"),
        ("iter_000/teacher_outputs.jsonl", "key"),
        ("iter_000/filter_decisions.jsonl", "key"),
        ("iter_001/train.jsonl", "id"),
        ("iter_001/predictions.jsonl", "key"),
    ):
        assert unique(read_jsonl(run / name), key), name
    assert not list(run.rglob(".*.tmp"))
    # Nothing lost: the same data and results as the sweep's uninterrupted run of this config.
    reference = reference_runs / run.name
    for name in ("iter_001/train.jsonl", "iter_000/filter_decisions.jsonl", "iter_001/scores.json"):
        assert (run / name).read_text() == (reference / name).read_text(), name
    comparable = [
        {k: v for k, v in it.items() if k not in ("phase_seconds", "teacher_requests", "engine_seconds")}
        for it in metrics["iterations"]
    ]
    expected = json.loads((reference / "metrics.json").read_text())["iterations"]
    assert comparable == [
        {k: v for k, v in it.items() if k not in ("phase_seconds", "teacher_requests", "engine_seconds")}
        for it in expected
    ]


def test_a_job_whose_time_limit_is_shorter_than_its_training_phase_finishes_after_requeues(
    slurm, tmp_path, data_dir, tiny_model
):
    """Issue 28: Slurm's warning before the time limit (SIGUSR1) stops the run and the job requeues
    itself; each attempt resumes the training phase from its last checkpoint, so a phase longer than
    the job's time limit still ends, with every step trained once after the last checkpoint."""
    from conftest import tiny_boost_args

    # How many optimizer steps this machine trains in ~100 s now (the tiny student: 2 steps an epoch).
    probe = tiny_boost_args(
        tmp_path / "probe", data_dir, "p", "--set", "loop.iterations=0", "--set", "train.epochs=10"
    )
    run_cli(*probe, cwd=REPO, timeout=600)
    rate = json.loads((tmp_path / "probe/runs/p/iter_000/student/train_log.json").read_text())["metrics"]
    steps = max(40, min(6000, int(rate["train_steps_per_second"] * 100))) // 2 * 2
    every = max(2, steps // 30)
    args = tiny_boost_args(
        tmp_path, data_dir, "long",
        "--set", "loop.iterations=0",
        "--set", f"train.epochs={steps // 2}",
        "--set", f"train.checkpoint_steps={every}",
    )[1:]  # fmt: skip
    # A 2-minute limit, warned 20 s before it: Slurm sends the warning 20 to 80 s early (its event resolution).
    run_cli("slurm", *args, "--time", "2", "--warn", "20", cwd=REPO, timeout=300)
    run = tmp_path / "runs" / "long"
    submitted = subprocess.run(["sbatch", "--parsable", str(run / "slurm.sbatch")], capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]

    deadline, pending_since = time.monotonic() + 1500, None
    while (job := slurm.job(job_id))["JobState"] != "COMPLETED":
        assert job["JobState"] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"), job
        assert time.monotonic() < deadline, job
        if job["JobState"] == "PENDING" and job.get("Reason") == "BeginTime":
            pending_since = pending_since or time.monotonic()
            # the requeue delay, skipped once the last attempt's processes are gone (started sooner, the
            # new attempt finds the old credential revoked)
            if time.monotonic() - pending_since > 10:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        else:
            pending_since = None
        time.sleep(1)
    assert int(job["Restarts"]) >= 1, f"the phase ended within one attempt ({steps} steps): {job}"
    logs = "".join(p.read_text() for p in sorted((run / "logs").iterdir()))
    assert logs.count("resuming the training from") >= 1, logs[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"]
    log = json.loads((run / "iter_000" / "student" / "train_log.json").read_text())
    # the last attempt started from a checkpoint (a periodic one, or the one its stop saved) and trained
    # only the steps after it
    assert log["resumed_from_step"]
    assert log["steps_this_attempt"] == steps - log["resumed_from_step"]
    assert max(entry["step"] for entry in log["log_history"]) == steps
    assert not (run / "iter_000" / "student-checkpoints").exists()
