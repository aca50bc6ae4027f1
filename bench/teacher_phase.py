"""A finished run's teacher phase replayed on the checked-out code: the same prompts, keys, seeds and
sampling (read from the run's iter_NNN/teacher_outputs.jsonl and config.yaml), the same engine, a
fresh record log and no cache, so the engine answers every request. Prints and records engine
start seconds, generate seconds and teacher output tokens per second: run it on two commits (a git
worktree each) to compare them, with nothing else on the machine.

    .venv/bin/python bench/teacher_phase.py runs/edge/snips-cpu-qwen [--iteration 0] [--repeats 2] [--tag after]
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

from bench.common import record  # noqa: E402
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
    parser.add_argument("--tag", default="", help="put in the results entry's name, e.g. before / after")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    rows = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(replay(args.run.resolve(), args.iteration, Path(tmp)))
        print(json.dumps(rows[-1]))
    entry = {
        "ratio": None,
        "goal": "teacher output tokens/s of the generate phase, engine start apart",
        "commit": commit.strip(),
        "run": str(args.run),
        "median_generate_s": statistics.median(r["generate_s"] for r in rows),
        "median_engine_start_s": statistics.median(r["engine_start_s"] for r in rows),
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "repeats": rows,
    }
    record("teacher_phase" + (f"_{args.tag}" if args.tag else ""), entry)
    print(json.dumps({k: v for k, v in entry.items() if k != "repeats"}))


if __name__ == "__main__":
    main()
