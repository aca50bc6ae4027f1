"""Chat vs continuation prompts for one teacher, per task: how many answers parse, and how many of
the examples they give pass the filter (valid, not a duplicate of the seed, not test overlap).

    python bench/teacher_styles.py [--teacher qwen2.5-coder-1.5b-instruct] [--tasks snips trec]
                                   [--per-label 1] [--count 3]

For each task, one seed example per label (data seed 0) is "wrong"; the chat style asks for
`--count` new examples in one answer (the paper's prompt), the continuation style makes `--count`
completions of a same-label list (4 other seed examples as shots). Every prompt of both styles
and all tasks goes to one vLLM engine start, each style with its own sampling (T 0.8, top_p 0.95,
the style's stop strings and token budget). Prints one JSON line per task and style; writes
bench/teacher_styles.json (one entry per teacher).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig  # noqa: E402
from llm2llm.data import load_task_data, sample  # noqa: E402
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat  # noqa: E402
from llm2llm.filtering import filter_examples  # noqa: E402
from llm2llm.generation import generate_cached  # noqa: E402
from llm2llm.models import checked_model  # noqa: E402
from llm2llm.store import atomic_write_json, read_jsonl  # noqa: E402

STYLES = ("chat", "continuation")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--tasks", nargs="+", default=["snips", "trec"])
    parser.add_argument("--per-label", type=int, default=1)
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args()
    teacher = checked_model(args.teacher)
    tokenizer = load_tokenizer(teacher)
    requests, sampling, context = [], {}, {}
    for name in args.tasks:
        data = load_task_data(DataConfig(dataset=name))
        task = data.task
        seed = sample(data.train, 5 * len(task.labels), 0, task, stratified=True)
        wrong = [ex for label in task.labels for ex in [s for s in seed if s["label"] == label][: args.per_label]]
        context[name] = (task, seed, wrong, data.test)
        for style in STYLES:
            group = f"{name}/{style}"
            budget = task.teacher_token_budget(style, args.count)
            sampling[group] = SamplingConfig(
                temperature=0.8, top_p=0.95, seed=0, max_new_tokens=budget, stop=task.teacher_stop(style)
            )
            for ex in wrong:
                if style == "chat":
                    prompts = [render_chat(tokenizer, task.teacher_chat(ex, args.count))]
                else:
                    rng = random.Random(ex["id"])
                    shots = [s for s in seed if s["label"] == ex["label"] and s["id"] != ex["id"]]
                    prompts = [task.teacher_continuation(ex, rng.sample(shots, min(4, len(shots))))] * args.count
                for i, prompt in enumerate(prompts):
                    requests.append(
                        {
                            "key": f"{group}/{ex['id']}/{i}",
                            "split": group,
                            "task": name,
                            "style": style,
                            "parent_id": ex["id"],
                            "prompt": prompt,
                        }
                    )
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "answers.jsonl"
        outputs, stats = generate_cached(
            EngineSpec("vllm", teacher, vllm=VLLMConfig().model_dump()), requests, log, sampling, 256, "teacher styles"
        )
        finish = {r["key"]: r["finish_reason"] for r in read_jsonl(log)}
    results = []
    for name, (task, seed, wrong, test) in context.items():
        by_id = {ex["id"]: ex for ex in wrong}
        for style in STYLES:
            rows = [r for r in requests if r["task"] == name and r["style"] == style]
            candidates, parsed_answers = [], 0
            for r in rows:
                parsed = task.parse_teacher(outputs[r["key"]], by_id[r["parent_id"]], style)
                cut = finish[r["key"]] == "length" and len(parsed) <= args.count
                parsed = parsed[: args.count if style == "chat" else 1]
                parsed_answers += bool(parsed)
                candidates += [
                    {"key": f"{r['key']}:{j}", "example": p, "truncated": cut and j == len(parsed) - 1}
                    for j, p in enumerate(parsed)
                ] or [{"key": f"{r['key']}:0", "example": None}]
            decisions = filter_examples(
                candidates, task, [task.key_text(s) for s in seed], [task.key_text(t) for t in test], 0.95
            )
            reasons = {
                reason: sum(d["reason"] == reason for d in decisions)
                for reason in sorted({d["reason"] for d in decisions})
            }
            examples = sum(d["example"] is not None for d in decisions)
            results.append(
                {
                    "task": name,
                    "style": style,
                    "answers": len(rows),
                    "parsed_answers": parsed_answers,
                    "examples": examples,
                    "kept": reasons.get("kept", 0),
                    "reasons": reasons,
                    "kept_share_of_asked": round(reasons.get("kept", 0) / (len(wrong) * args.count), 3),
                    "sample_kept": [d["example"]["text"] for d in decisions if d["kept"]][:4],
                }
            )
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    out = REPO / "bench" / "teacher_styles.json"
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[args.teacher] = {
        "count": args.count,
        "per_label": args.per_label,
        "engine_start_seconds": stats.engine_start_seconds,
        "generate_seconds": stats.generate_seconds,
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    atomic_write_json(out, saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
