"""What `make boost DATASET=snips` runs (the default profile, or --profile), end to end, and what it
shows about llm2llm's own cost:

  boost      wall time of the whole run (fresh run directory and generation cache), per phase, and
             each phase split into starting (process, imports, model load, engine start-up), working
             (the training loop; generating and storing answers) and the rest (saving, exit, release).
             goal: <= 15 min on 2 cores for the default
  overhead   each iteration's wall time split into: inside the engines (the Trainer's training
             loop, vLLM generating evaluation and teacher answers); the rest of the phase
             processes' lives (spawn, imports, model load, engine start-up, saving, exit); and
             llm2llm's driver (data, prompts, filter, merge, report, release checks).
             goal: wall - engines <= 3 % of the iteration
  memory     peak memory (summed peak RSS) of each phase's processes and of the driver, at the default seed
             size and at --large-seed-size (a short plain run: `--set train.epochs=...`), and the
             largest seed size that fits in this machine's memory at the slope measured between them.

    python bench/boost.py [--profile cpu-qwen] [--repeats 1] [--large-seed-size 700] [--workdir DIR] [--skip-memory]

Each run is the real CLI in a subprocess (`llm2llm boost --profile PROFILE --dataset snips`).
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import record  # noqa: E402
from llm2llm.config import DEFAULT_PROFILE, resolve_config  # noqa: E402
from llm2llm.report import time_split  # noqa: E402

LLM2LLM = str(Path(sys.executable).with_name("llm2llm"))
PHASE_ROLES = ("train", "evaluate", "generate")


PROFILE = DEFAULT_PROFILE  # what `make boost DATASET=snips` runs; --profile changes it


def boost(workdir: Path, run: str, *extra: str) -> tuple[float, dict]:
    """One boost in a fresh runs dir; returns (wall seconds of the whole command, metrics.json)."""
    runs = workdir / run
    argv = [
        LLM2LLM,
        "boost",
        "--profile",
        PROFILE,
        "--dataset",
        "snips",
        "--runs-dir",
        str(runs),
        "--run",
        run,
        *extra,
    ]
    start = time.monotonic()
    with open(workdir / f"{run}.log", "w") as log:
        proc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}); see {workdir / f'{run}.log'}")
    metrics = json.loads((runs / run / "metrics.json").read_text())
    metrics["breakdown"] = breakdown(runs / run, metrics)
    return wall, metrics


def breakdown(run_dir: Path, metrics: dict) -> dict[str, dict[str, float]]:
    """Each phase process of the run ("train iter_000", ...) split into start (spawn, imports, model
    load, engine start-up), work (the training loop; generating and storing answers) and the rest of
    its life (saving the student, shutting the engine down, exit)."""
    out = {}
    for phase in metrics["phases"]:
        kind, it = phase["key"].split(" ")
        folder = run_dir / it
        if kind == "train" and (folder / "train_log.json").exists():
            seconds = json.loads((folder / "train_log.json").read_text())["seconds"]
            start, work = seconds["before_training"], seconds["training"]
        elif (
            stats := folder / {"evaluate": "eval_stats.json", "generate": "teacher_stats.json"}.get(kind, "-")
        ).exists():
            numbers = json.loads(stats.read_text())
            start, work = numbers["engine_start_seconds"], numbers["generate_seconds"]
        else:
            continue
        out[phase["key"]] = {
            "wall": phase["seconds"],
            "start": round(start, 2),
            "work": round(work, 2),
            "rest": round(phase["seconds"] - start - work, 2),
        }
    return out


def phase_kind(key: str) -> str:
    return key.split(" ")[0]


def peaks(metrics: dict) -> dict[str, float]:
    """Peak memory (MiB) per phase kind over the run's phase processes, plus the driver's."""
    out: dict[str, float] = {}
    for p in metrics["phases"]:
        kind = phase_kind(p["key"])
        out[kind] = max(out.get(kind, 0.0), p.get("peak_memory_mib", 0.0))
    out["driver"] = metrics["driver_peak_rss_mib"]
    return out


def overhead_entry(runs: list[tuple[float, dict]]) -> dict:
    rows = []
    for wall, metrics in runs:
        for it in metrics["iterations"]:
            split = time_split(it, metrics["phases"])
            rows.append(
                {
                    "iteration": it["iteration"],
                    **split,
                    "overhead_fraction": round(1 - split["engines"] / split["wall"], 4),
                    "driver_fraction": round(split["driver"] / split["wall"], 4),
                }
            )
    total_wall = statistics.median(w for w, _ in runs)
    engines = statistics.median(sum(sum(it["engine_seconds"].values()) for it in m["iterations"]) for _, m in runs)
    fraction = statistics.median(r["overhead_fraction"] for r in rows)
    return {
        "ratio": round(fraction, 4),
        "goal": "<= 3 % of an iteration outside the engines",
        "baseline": {
            "name": "inside the engines (median over iterations)",
            "median_s": statistics.median(r["engines"] for r in rows),
        },
        "llm2llm": {
            "name": "iteration wall (median over iterations)",
            "median_s": statistics.median(r["wall"] for r in rows),
        },
        "driver_fraction": statistics.median(r["driver_fraction"] for r in rows),
        "process_other_median_s": statistics.median(r["process_other"] for r in rows),
        "whole_run": {
            "wall_s": round(total_wall, 1),
            "engines_s": round(engines, 1),
            "overhead_fraction": round(1 - engines / total_wall, 4),
        },
        "iterations": rows,
        "sizes": sizes(),
    }


def sizes() -> dict:
    config = resolve_config(PROFILE)
    return {
        "profile": PROFILE,
        "dataset": "snips",
        "seed_size": config.data.seed_size,
        "test_size": config.data.test_size,
        "iterations": config.loop.iterations,
        "student": config.student.model,
        "teacher": config.teacher.model,
    }


def boost_entry(runs: list[tuple[float, dict]]) -> dict:
    walls = [round(w, 1) for w, _ in runs]
    metrics = runs[-1][1]
    per_phase = {str(it["iteration"]): it["phase_seconds"] for it in metrics["iterations"]}
    accuracy = [round(100 * it["test_accuracy"], 1) for it in metrics["iterations"]]
    median = statistics.median(walls)
    return {
        "ratio": round(15 * 60 / median, 2),
        "goal": ">= 1 (15 min / wall)",
        "llm2llm": {"name": f"make boost DATASET=snips (profile {PROFILE})", "median_s": median, "runs_s": walls},
        "baseline": {"name": "the 15-minute target", "median_s": 900},
        "phase_seconds": per_phase,
        "phase_breakdown": metrics["breakdown"],
        "teacher_tokens": metrics.get("teacher_tokens"),
        "test_accuracy_per_iteration": accuracy,
        "sizes": sizes(),
    }


def memory_entry(small: dict, large: dict, small_size: int, large_size: int) -> dict:
    """Peak memory per phase at two seed sizes, and the largest seed size that fits this machine.
    A vLLM phase holds the model and one batch's KV cache (sized by the largest batch, at most
    vllm.cpu_kv_cache_gib): once a batch is full (eval_batch_size answers, teacher.batch_size
    requests) it stops growing with the seed, so its larger peak is its bound. Training and the
    driver are extrapolated linearly from the two sizes."""
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    a, b = peaks(small), peaks(large)
    slopes = {k: (b[k] - a[k]) / (large_size - small_size) for k in b if k in a}
    bounded = {k: max(a.get(k, 0.0), b.get(k, 0.0)) for k in ("evaluate", "generate") if k in a or k in b}

    def grown(kind: str, n: int) -> float:
        return a[kind] + max(0.0, slopes.get(kind, 0.0)) * (n - small_size)

    def need(n: int) -> float:  # one phase process at a time, beside the driver
        return max([grown("train", n), *bounded.values()]) + grown("driver", n)

    if max(slopes.get("train", 0.0), slopes.get("driver", 0.0)) <= 0:
        largest = None
    else:
        n = small_size
        while need(n * 2) <= budget:
            n *= 2
        lo, hi = n, n * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid)
        largest = lo
    return {
        "ratio": None,
        "goal": "peak memory per phase; the largest SEED_SIZE within this machine's memory",
        "peak_mib": {str(small_size): a, str(large_size): b},
        "slope_mib_per_seed_example": {k: round(v, 3) for k, v in slopes.items()},
        "vllm_phase_bound_mib": bounded,
        "memory_mib": round(budget),
        "predicted_peak_mib_at_13084": round(need(13084), 1),
        "largest_seed_size": largest,
        "sizes": {"small": small_size, "large": large_size, "dataset": "snips (13,084 training examples)"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="default boosts to run (~10 min each here)")
    parser.add_argument("--large-seed-size", type=int, default=700)
    parser.add_argument(
        "--large-epochs", type=float, default=0.2, help="train.epochs of the large-seed run (memory, not accuracy)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="the profile to time (default: make boost's)")
    parser.add_argument("--skip-memory", action="store_true", help="only the boost and overhead figures")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = [boost(workdir, f"default-{i}") for i in range(args.repeats)]
        entry = record("boost", boost_entry(runs))
        print(f"boost: {entry['llm2llm']['median_s'] / 60:.1f} min (goal <= 15); phases: {entry['phase_seconds']}")
        for key, split in entry["phase_breakdown"].items():
            print(f"  {key}: {split['wall']:.1f} s = start {split['start']:.1f} + work {split['work']:.1f} + rest "
                  f"{split['rest']:.1f}")  # fmt: skip
        entry = record("overhead", overhead_entry(runs))
        print(
            f"overhead: {100 * entry['ratio']:.1f} % of an iteration outside the engines (goal <= 3 %), "
            f"of which the driver {100 * entry['driver_fraction']:.1f} %"
        )
        if args.skip_memory:
            return
        _, large = boost(
            workdir,
            "large",
            "--seed-size",
            str(args.large_seed_size),
            "--method",
            "plain",
            "--set",
            f"train.epochs={args.large_epochs}",
            "--set",
            "data.test_size=50",
        )
        entry = record("memory", memory_entry(runs[0][1], large, sizes()["seed_size"], args.large_seed_size))
        print(
            f"memory: peaks (MiB) {entry['peak_mib']}; largest seed size: "
            f"{entry['largest_seed_size'] or 'not bounded by memory'}"
        )


if __name__ == "__main__":
    main()
