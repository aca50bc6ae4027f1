"""Record a teacher's real answers to the loop's chat requests, as test fixtures for the parsers.

    python bench/teacher_answers.py --task gsm8k [--teacher qwen2.5-coder-1.5b-instruct] [--examples 5]
                                    [--count 2] --output tests/fixtures/teacher_answers/gsm8k-qwen2.5-coder-1.5b.jsonl

The first `--examples` seed examples (data seed 0) are taken as wrong and the teacher is asked, as the
loop asks it (the task's chat template, the teacher's chat template, T 0.8, top_p 0.95, the chat
token budget for `--count` examples), for `--count` new examples each, on one vLLM engine. Each line
of the output holds the seed example, the prompt, the count asked and the teacher's raw answer;
tests/test_tasks.py parses them with the task's parser and asserts the parse rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig  # noqa: E402
from llm2llm.data import load_task_data, sample  # noqa: E402
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat  # noqa: E402
from llm2llm.generation import generate_cached  # noqa: E402
from llm2llm.models import checked_model  # noqa: E402
from llm2llm.store import atomic_write_jsonl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    teacher = checked_model(args.teacher)
    tokenizer = load_tokenizer(teacher)
    data = load_task_data(DataConfig(dataset=args.task))
    task = data.task
    seed = sample(data.train, args.examples, 0, task, stratified=True)
    sampling = SamplingConfig(
        temperature=0.8, top_p=0.95, seed=0, max_new_tokens=task.teacher_token_budget("chat", args.count)
    )
    requests = [
        {
            "key": f"{args.task}/{ex['id']}",
            "prompt": render_chat(tokenizer, task.teacher_chat(ex, args.count)),
            "ex": ex,
        }
        for ex in seed
    ]
    spec = EngineSpec("vllm", teacher, vllm={**VLLMConfig().model_dump(), "trust_remote_code": False})
    with tempfile.TemporaryDirectory() as tmp:
        outputs, stats = generate_cached(
            spec, requests, Path(tmp) / "answers.jsonl", sampling, len(requests), "teacher"
        )
    atomic_write_jsonl(
        args.output,
        [
            {
                "task": args.task,
                "teacher": args.teacher,
                "count": args.count,
                "example": r["ex"],
                "prompt": r["prompt"],
                "output": outputs[r["key"]],
            }
            for r in requests
        ],  # fmt: skip
    )
    print(json.dumps({"requests": len(requests), "generate_seconds": stats.generate_seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
