"""Serve an exported student with vLLM and check it answers as the run's own evaluation did.

    python -m bench.serve_export runs/snips-cpu-qwen exports/snips --examples 40

Starts a vLLM OpenAI-compatible server on the export's model folder (the server llm2llm starts for
`teacher.engine=vllm-server`: 127.0.0.1, an API key from the environment), sends the test prompts the
run recorded for the exported iteration (iter_NNN/predictions.jsonl), greedy with the run's answer
budget, and prints how many answers equal the recorded ones. Exit code 1 when fewer than --min-agree
of them do."""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from llm2llm.config import SamplingConfig, config_from_file
from llm2llm.data import load_task_data
from llm2llm.engines import EngineSpec, load_tokenizer
from llm2llm.generation import generate_cached
from llm2llm.store import read_jsonl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run directory that was exported")
    parser.add_argument("export", type=Path, help="the folder `llm2llm export` wrote (with model/)")
    parser.add_argument("--examples", type=int, default=40, help="how many recorded test prompts to send")
    parser.add_argument("--iteration", type=int, help="the iteration exported (default: the run's selected one)")
    parser.add_argument("--min-agree", type=float, default=0.95, help="the share of answers that must agree")
    args = parser.parse_args(argv)

    config = config_from_file(args.export / "config.yaml")
    iteration = args.iteration
    if iteration is None:
        iteration = json.loads((args.run / "metrics.json").read_text())["selected"]["iteration"]
    model = args.export / "model"
    budget = config.student.eval_max_new_tokens or load_task_data(config.data).task.max_answer_tokens(
        load_tokenizer(model)
    )
    recorded = [
        p for p in read_jsonl(args.run / f"iter_{iteration:03d}" / "predictions.jsonl") if p["split"] == "test"
    ]
    recorded = recorded[: args.examples]
    requests = [{"key": p["key"], "prompt": p["prompt"]} for p in recorded]
    with tempfile.TemporaryDirectory() as tmp:
        options = config.vllm.model_dump()
        spec = EngineSpec("vllm-server", model, vllm=options, server_log=Path(tmp) / "server.log")
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=budget, seed=config.train.seed)
        answers, _ = generate_cached(spec, requests, Path(tmp) / "answers.jsonl", sampling, 64, "exported student")
    agree = sum(answers[p["key"]] == p["output"] for p in recorded)
    print(json.dumps({"iteration": iteration, "examples": len(recorded), "agree": agree}))
    for p in recorded:
        if answers[p["key"]] != p["output"]:
            print(f"differs: {p['key']}: served {answers[p['key']]!r}, run {p['output']!r}")
    return 0 if agree >= args.min_agree * len(recorded) else 1


if __name__ == "__main__":
    sys.exit(main())
