"""How many seed examples each seed-evaluation setting flags as wrong, for one trained student.

    python bench/seed_eval.py RUN_DIR [--iteration 0] [--temperatures 0 0.7 1.0 1.3] [--samples 8]

Reads the run's config, seed and iter_NNN/student (kept while the run has not moved past it, or
with loop.keep_checkpoints), and answers every seed example `--samples` times at each temperature,
all in one engine start. Prints, per temperature, the share of right sampled answers and how many
seed examples the rules "any of the first k samples wrong" (k = 1, 2, 4, ...) and "majority wrong"
flag: what LLM2LLM's teacher would be asked about. Writes nothing into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llm2llm.config import SamplingConfig, config_from_file  # noqa: E402
from llm2llm.data import load_task_data  # noqa: E402
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat  # noqa: E402
from llm2llm.generation import generate_cached  # noqa: E402
from llm2llm.store import read_jsonl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.7, 1.0, 1.3])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--top-p", type=float, default=0.9)
    args = parser.parse_args()
    config = config_from_file(args.run_dir / "config.yaml")
    it_dir = args.run_dir / f"iter_{args.iteration:03d}"
    student = it_dir / "student"
    if not (student / "config.json").exists() and not (student / "adapter_config.json").exists():
        sys.exit(f"error: {student} is not on disk (pruned); rerun with --set loop.keep_checkpoints=true")
    task = load_task_data(config.data).task
    seed = read_jsonl(args.run_dir / "iter_000" / "train.jsonl")
    tokenizer = load_tokenizer(student)
    budget = config.student.eval_max_new_tokens or task.max_answer_tokens(tokenizer)
    sampling, requests = {}, []
    for t in args.temperatures:
        name = f"T={t:g}"
        sampling[name] = SamplingConfig(
            temperature=t, top_p=args.top_p if t else 1.0, seed=config.train.seed, max_new_tokens=budget
        )
        for ex in seed:
            for s in range(1 if t == 0 else args.samples):
                requests.append(
                    {
                        "key": f"{name}/{ex['id']}/{s}",
                        "split": name,
                        "id": ex["id"],
                        "sample": s,
                        "prompt": render_chat(tokenizer, task.prompt(ex)),
                    }
                )
    options = {**config.vllm.model_dump(), **config.student.loading()}
    with tempfile.TemporaryDirectory() as tmp:
        outputs, _ = generate_cached(
            EngineSpec(config.student.engine, student, vllm=options),
            requests,
            Path(tmp) / "seed.jsonl",
            sampling,
            512,
            "seed evaluation",
        )
    by_id = {ex["id"]: ex for ex in seed}
    result = {}
    for name in sampling:
        rows = [r for r in requests if r["split"] == name]
        right = {i: [task.score(outputs[r["key"]], by_id[i]).correct for r in rows if r["id"] == i] for i in by_id}
        n = len(next(iter(right.values())))
        ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= n]
        result[name] = {
            "sampled_right": round(sum(map(sum, right.values())) / (n * len(seed)), 3),
            **{f"any_of_{k}": sum(not all(v[:k]) for v in right.values()) for k in ks},
            "majority": sum(2 * v.count(False) >= n for v in right.values()) if n > 1 else None,
        }
    print(
        json.dumps(
            {
                "run": str(args.run_dir),
                "iteration": args.iteration,
                "seed_examples": len(seed),
                "samples": args.samples,
                "top_p": args.top_p,
                "wrong": result,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
