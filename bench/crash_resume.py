"""Crash/resume trials: a small CPU boost is killed with SIGKILL at a random moment inside a phase,
then the same command is rerun until it finishes; the run directory must then hold exactly what
an uninterrupted run with the same seeds holds (training data, teacher answers, filter decisions,
predictions, scores, metrics), every record once, and no temporary file.

    python bench/crash_resume.py [--trials 20] [--seed 0] [--workdir DIR] [--output FILE]

Trial i aims at phase slot i of a shuffled round of all slots (iteration x phase: train, evaluate,
generate, filter, merge, report), waits for the slot before it to finish, then sleeps a random
fraction of the slot's duration in the uninterrupted run and kills. Where the kill really landed is
read back from the run's timings (the first phase without a record). Figures: docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from llm2llm.rundir import PHASE_MARKERS  # noqa: E402
from llm2llm.store import read_jsonl  # noqa: E402

PHASES = tuple(PHASE_MARKERS)


def comparable(run_dir: Path) -> dict:
    """Everything a run produced that must not depend on interruptions (timings excluded).
    Raises AssertionError on a record stored twice."""
    out = {}
    for it_dir in sorted(run_dir.glob("iter_*")):
        for name in ("train.jsonl", "filter_decisions.jsonl", "scores.json"):
            if (it_dir / name).exists():
                out[f"{it_dir.name}/{name}"] = (it_dir / name).read_text()
        for name in ("teacher_outputs.jsonl", "predictions.jsonl"):
            if (it_dir / name).exists():
                records = read_jsonl(it_dir / name)
                keys = [r["key"] for r in records]
                assert len(keys) == len(set(keys)), f"duplicate records in {it_dir.name}/{name}"
                out[f"{it_dir.name}/{name}"] = sorted(json.dumps(r, sort_keys=True) for r in records)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("phases")  # process ids and timings
    metrics.pop("wall_seconds")
    metrics.pop("driver_peak_rss_mib", None)
    for it in metrics["iterations"]:
        it.pop("phase_seconds")
        it.pop("teacher_requests", None)  # where answers came from depends on the interruptions
        it.pop("engine_seconds", None)
    out["metrics"] = metrics
    return out


def stray_files(run_dir: Path) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if p.name != ".lock"]


def boost_command(runs_dir: Path, run: str, data_dir: str | None, iterations: int = 1) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "launcher.cli",
        "boost",
        "--profile",
        "tiny",
        "--iterations",
        str(iterations),
        "--runs-dir",
        str(runs_dir),
        "--run",
        run,
    ]
    return command + (["--data-dir", data_dir] if data_dir else [])


def finished_slots(run_dir: Path) -> list[str]:
    path = run_dir / "timings.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line)["key"] for line in lines if line.endswith("}")]


def run_to_completion(command: list[str], log) -> int:
    """Rerun the same command until it succeeds; returns the number of reruns."""
    for attempt in range(1, 6):
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=log)
        if proc.returncode == 0:
            return attempt
    raise RuntimeError(f"{' '.join(command)} still failing after 5 reruns")


def reference_of(run_dir: Path) -> dict:
    """What the trials are compared with: an uninterrupted run's phase slots, their durations, its data."""
    timings = read_jsonl(run_dir / "timings.jsonl")
    return {
        "slots": [t["key"] for t in timings],
        "durations": {t["key"]: t["seconds"] for t in timings},
        "comparable": comparable(run_dir),
    }


def trial(
    number: int,
    slot: str,
    reference: dict,
    rng: random.Random,
    workdir: Path,
    data_dir: str | None,
    iterations: int = 1,
) -> dict:
    """One kill inside `slot` (e.g. "0/generate"), then reruns until done; the outcome checked."""
    runs_dir = workdir / f"trial-{number:02d}"
    run_dir = runs_dir / "r"
    command = boost_command(runs_dir, "r", data_dir, iterations)
    index = reference["slots"].index(slot)
    before = reference["slots"][index - 1] if index else None
    duration = reference["durations"][slot]
    delay = rng.uniform(0, duration)
    started = time.monotonic()
    with open(workdir / f"trial-{number:02d}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
        waited_from = None
        while proc.poll() is None:
            if waited_from is None and (before is None or before in finished_slots(run_dir)):
                waited_from = time.monotonic()
            if waited_from is not None and time.monotonic() - waited_from >= delay:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        code = proc.wait()
        done = finished_slots(run_dir)
        hit = next((s for s in reference["slots"] if s not in done), None) if code == -signal.SIGKILL else None
        reruns = run_to_completion(command, log)
    result = {
        "trial": number,
        "aimed_at": slot,
        "delay_s": round(delay, 2),
        "killed": code == -signal.SIGKILL,
        "killed_in": hit,
        "reruns": reruns,
        "seconds": round(time.monotonic() - started, 1),
    }
    try:
        result["identical"] = comparable(run_dir) == reference["comparable"]
        result["problem"] = None if result["identical"] else "differs from the uninterrupted run"
    except AssertionError as e:
        result["identical"], result["problem"] = False, str(e)
    strays = stray_files(run_dir)
    if strays:
        result["identical"], result["problem"] = False, f"temporary files left: {strays}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="RNG seed for the kill moments")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "crash_resume.json")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llm2llm-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    with open(workdir / "reference.log", "w") as log:
        subprocess.run(
            boost_command(workdir / "reference", "r", args.data_dir), cwd=REPO, stdout=log, stderr=log, check=True
        )
    reference = reference_of(workdir / "reference" / "r")
    slots = reference["slots"]
    print(f"uninterrupted run: {len(slots)} phase slots in {time.monotonic() - started:.0f} s ({workdir})", flush=True)

    rng = random.Random(args.seed)
    results = []
    rounds = []
    while len(rounds) < args.trials:
        rounds += rng.sample(slots, len(slots))
    for number, slot in enumerate(rounds[: args.trials]):
        result = trial(number, slot, reference, rng, workdir, args.data_dir)
        results.append(result)
        print(json.dumps(result), flush=True)

    killed = [r for r in results if r["killed"]]
    summary = {
        "trials": len(results),
        "killed_mid_run": len(killed),
        "identical": sum(r["identical"] for r in results),
        "killed_in_phase": {
            p: sum(1 for r in killed if r["killed_in"] and r["killed_in"].split("/")[1] == p) for p in PHASES
        },
        "seconds": round(time.monotonic() - started),
        "workdir": str(workdir),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=1) + "\n")
    from bench.common import record

    record(
        "crash_resume",
        {
            "ratio": round(summary["identical"] / summary["trials"], 3),
            "goal": "1.0 (every killed run identical after rerun)",
            **{k: summary[k] for k in ("trials", "killed_mid_run", "identical", "killed_in_phase", "seconds")},
            "sizes": {
                "profile": "tiny",
                "details": str(args.output.relative_to(REPO))
                if args.output.is_relative_to(REPO)
                else str(args.output),
            },
        },
    )
    print(
        f"{summary['identical']}/{summary['trials']} trials identical to the uninterrupted run; "
        f"{summary['killed_mid_run']} killed mid-run, by phase: {summary['killed_in_phase']}; results in {args.output}"
    )
    return 0 if summary["identical"] == summary["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
