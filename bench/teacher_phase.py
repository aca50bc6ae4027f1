"""A finished run's teacher phase replayed on the checked-out code: the same prompts, keys, seeds and
sampling (read from the run's iter_NNN/teacher_outputs.jsonl and config.yaml), the same engine, a
fresh record log and no cache, so the engine answers every request. Prints and records engine
start seconds, generate seconds and teacher output tokens per second: run it on two commits (a git
worktree each) to compare them, with nothing else on the machine.

    .venv/bin/python bench/teacher_phase.py runs/edge/snips-cpu-qwen [--iteration 0] [--repeats 2] [--side before]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, record  # noqa: E402
from llm2llm.config import config_from_file  # noqa: E402
from llm2llm.data import load_task_data  # noqa: E402
from llm2llm.engines import EngineSpec, load_tokenizer  # noqa: E402
from llm2llm.generation import generate_cached  # noqa: E402
from llm2llm.models import resolve_model  # noqa: E402
from llm2llm.store import read_jsonl  # noqa: E402
from llm2llm.teacher import teacher_sampling  # noqa: E402


def replay(run: Path, iteration: int, workdir: Path) -> dict:
    config = config_from_file(run / "config.yaml")
    teacher = config.teacher
    records = read_jsonl(run / f"iter_{iteration:03d}" / "teacher_outputs.jsonl")
    requests = [{"key": r["key"], "prompt": r["prompt"]} for r in records]
    task = load_task_data(config.data).task
    sampling = teacher_sampling(teacher, task, max(1, teacher.per_wrong))  # as teacher_generate asks
    model = resolve_model(teacher.model)
    spec = EngineSpec(teacher.engine, model, vllm={**config.vllm.model_dump(), **teacher.loading()})
    outputs, stats = generate_cached(
        spec, requests, workdir / "answers.jsonl", sampling, teacher.batch_size, "teacher"
    )
    tokenizer = load_tokenizer(model)
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in outputs.values())
    same = sum(outputs[r["key"]] == r["output"] for r in records)
    return {
        "requests": len(requests),
        "engine_start_s": stats.engine_start_seconds,
        "generate_s": stats.generate_seconds,
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / stats.generate_seconds, 2),
        "answers_as_in_the_run": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--side",
        choices=("before", "after"),
        default="after",
        help="which side of the comparison this checkout is: the results entry keeps one of each",
    )
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    rows = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(replay(args.run.resolve(), args.iteration, Path(tmp)))
        print(json.dumps(rows[-1]))
    side = {
        "name": f"{args.side} ({commit.strip()})",
        "median_s": statistics.median(r["generate_s"] for r in rows),
        "median_engine_start_s": statistics.median(r["engine_start_s"] for r in rows),
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "repeats": rows,
    }
    entry = json.loads(RESULTS.read_text()).get("teacher_phase", {}) if RESULTS.exists() else {}
    entry[{"before": "baseline", "after": "llm2llm"}[args.side]] = side
    before, after = entry.get("baseline"), entry.get("llm2llm")
    entry.update(
        ratio=round(before["median_s"] / after["median_s"], 3) if before and after else 1.0,
        goal="generate seconds of a run's teacher phase replayed, before / after a change (> 1: faster)",
        run=str(args.run),
    )
    record("teacher_phase", entry)
    print(json.dumps({k: v for k, v in side.items() if k != "repeats"}))
