"""Engine benchmarks, measured side by side in one run on the same prompts (SmolLM2-135M-Instruct):

  teacher   llm2llm's teacher generation (vLLM engine in the phase process, cache, record log)
            against raw `LLM.generate` on the same prompts and seeds.       goal: ratio >= 0.95
  evaluate  student evaluation (greedy, SNIPS test) on vLLM against HF `generate`.   goal: >= 3x

Usage: .venv/bin/python bench/engines.py [--eval-examples 300] [--teacher-prompts 96] [--repeats 3]
Writes the "teacher" and "evaluate" entries of bench/results.json (medians over the repeats).
Run it with nothing else on the machine: CPU contention changes the figures many times over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import record, side  # noqa: E402
from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig  # noqa: E402
from llm2llm.data import load_task_data, sample  # noqa: E402
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat  # noqa: E402
from llm2llm.generation import generate_cached, request_key, request_seed  # noqa: E402
from llm2llm.models import checked_model  # noqa: E402

OPTIONS = VLLMConfig().model_dump()

RAW_SCRIPT = """
import json, os, sys, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "{kv}")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    prompts, seeds, sampling = json.load(open(sys.argv[1]))
    t0 = time.time()
    llm = LLM(model={model!r}, dtype="float32", enforce_eager=True, max_model_len={max_len}, seed=0,
              enable_prefix_caching=True, enable_chunked_prefill=False)  # see llm2llm.vllm_args.vllm_engine_args
    t1 = time.time()
    params = [SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                             max_tokens=sampling["max_new_tokens"], stop=sampling["stop"] or None, seed=s)
              for s in seeds]
    outs = llm.generate(prompts, params, use_tqdm=False)
    t2 = time.time()
    json.dump({{"outputs": [o.outputs[0].text for o in outs], "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
               "start": t1 - t0, "generate": t2 - t1}}, open(sys.argv[2], "w"))
"""


def raw_vllm(model: Path, prompts: list[str], seeds: list[int], sampling: SamplingConfig, tmp: Path) -> dict:
    script = tmp / "raw.py"
    script.write_text(
        textwrap.dedent(
            RAW_SCRIPT.format(model=str(model), kv=OPTIONS["cpu_kv_cache_gib"], max_len=OPTIONS["max_model_len"])
        )
    )
    (tmp / "raw_in.json").write_text(json.dumps([prompts, seeds, sampling.model_dump()]))
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp / "raw_in.json"), str(tmp / "raw_out.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"raw vLLM run failed:\n{proc.stderr[-3000:]}")
    result = json.loads((tmp / "raw_out.json").read_text())
    result["total"] = time.time() - start
    return result


def count_tokens(tokenizer, texts) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def bench_teacher(model: Path, data, n_prompts: int, tmp: Path) -> dict:
    task = data.task
    wrong = sample(data.train, n_prompts, 1, task, stratified=True)
    requests = []
    for i, ex in enumerate(wrong):
        shots = [s for s in data.train[:400] if s["label"] == ex["label"] and s["id"] != ex["id"]][i % 5 : i % 5 + 4]
        prompt = task.teacher_continuation(ex, shots)
        requests.append({"key": request_key("bench", prompt, i), "prompt": prompt})
    sampling = SamplingConfig(temperature=0.8, top_p=0.95, max_new_tokens=48, stop=["\n"], seed=0)
    prompts = [r["prompt"] for r in requests]
    raw = raw_vllm(model, prompts, [request_seed(sampling, r["key"]) for r in requests], sampling, tmp)
    start = time.time()
    outputs, stats = generate_cached(
        EngineSpec("vllm", model, vllm=OPTIONS),
        requests,
        tmp / "teacher.jsonl",
        sampling,
        len(requests),
        "teacher",
        tmp / "cache.sqlite",
    )
    total = time.time() - start
    ours = [outputs[r["key"]] for r in requests]
    tokenizer = load_tokenizer(model)
    tokens, raw_tokens = (
        count_tokens(tokenizer, ours),
        count_tokens(tokenizer, raw["outputs"]),
    )  # text tokens, stop excluded
    return {
        "prompts": len(requests),
        "raw_vllm": {
            "start_s": round(raw["start"], 1),
            "generate_s": round(raw["generate"], 2),
            "total_s": round(raw["total"], 1),
            "output_tokens": raw_tokens,
            "tok_per_s": round(raw_tokens / raw["generate"], 1),
        },
        "llm2llm": {
            "start_s": stats.engine_start_seconds,
            "generate_s": stats.generate_seconds,
            "total_s": round(total, 1),
            "output_tokens": tokens,
            "tok_per_s": round(tokens / stats.generate_seconds, 1),
        },
        "same_outputs": sum(a == b for a, b in zip(ours, raw["outputs"])) / len(ours),
        "ratio_generate": round(raw["generate"] / stats.generate_seconds, 3),
        "ratio_total": round(raw["total"] / total, 3),
    }


def bench_evaluate(model: Path, data, n_examples: int, tmp: Path) -> dict:
    task = data.task
    tokenizer = load_tokenizer(model)
    examples = sample(data.test, n_examples, 0)
    requests = [{"key": ex["id"], "prompt": render_chat(tokenizer, task.prompt(ex))} for ex in examples]
    sampling = SamplingConfig(max_new_tokens=task.max_answer_tokens(tokenizer))
    results = {}
    for name, spec, batch in [
        ("hf_generate", EngineSpec("transformers", model), 32),
        ("vllm", EngineSpec("vllm", model, vllm=OPTIONS), len(requests)),
    ]:
        start = time.time()
        outputs, stats = generate_cached(spec, requests, tmp / f"eval-{name}.jsonl", sampling, batch, name)
        results[name] = {
            "start_s": stats.engine_start_seconds,
            "generate_s": stats.generate_seconds,
            "total_s": round(time.time() - start, 1),
            "examples_per_s": round(len(requests) / stats.generate_seconds, 2),
            "accuracy": round(sum(task.score(outputs[ex["id"]], ex).correct for ex in examples) / len(examples), 4),
            "outputs": outputs,
        }
    hf, vl = results["hf_generate"].pop("outputs"), results["vllm"].pop("outputs")
    return {
        "examples": len(requests),
        **results,
        "same_outputs": sum(hf[k] == vl[k] for k in hf) / len(hf),
        "speedup_generate": round(results["hf_generate"]["generate_s"] / results["vllm"]["generate_s"], 2),
        "speedup_total": round(results["hf_generate"]["total_s"] / results["vllm"]["total_s"], 2),
    }


def side_by_side(
    runs: list[dict], baseline: tuple[str, str], ours: tuple[str, str], goal: str, digits: int, sizes: dict
) -> dict:
    """A results.json entry from repeated runs: baseline and ours are (key in each run, description);
    the ratio is baseline / ours on the generation-only medians."""

    def times(key: str, field: str) -> list[float]:
        return [r[key][field] for r in runs]

    (base_key, base_name), (our_key, our_name) = baseline, ours
    base, mine = times(base_key, "generate_s"), times(our_key, "generate_s")
    base_total, mine_total = (
        statistics.median(times(base_key, "total_s")),
        statistics.median(times(our_key, "total_s")),
    )
    return {
        "ratio": round(statistics.median(base) / statistics.median(mine), digits),
        "goal": goal,
        "baseline": side(base_name, base, total_median_s=base_total),
        "llm2llm": side(our_name, mine, total_median_s=mine_total),
        "ratio_incl_engine_start": round(base_total / mine_total, digits),
        "same_outputs": min(r["same_outputs"] for r in runs),
        "sizes": sizes,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-examples", type=int, default=300)
    parser.add_argument("--teacher-prompts", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="each side runs this many times; medians are reported")
    args = parser.parse_args()
    model = checked_model("smollm2-135m-instruct")
    data = load_task_data(DataConfig(dataset="snips"))
    teacher_runs, eval_runs = [], []
    for _ in range(args.repeats):  # interleaved, so drift on the machine hits both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            teacher_runs.append(bench_teacher(model, data, args.teacher_prompts, Path(tmp)))
            eval_runs.append(bench_evaluate(model, data, args.eval_examples, Path(tmp)))
    model_name = "smollm2-135m-instruct (fp32)"
    teacher = record(
        "teacher",
        side_by_side(
            teacher_runs,
            ("raw_vllm", "raw vLLM LLM.generate, same prompts and seeds"),
            ("llm2llm", "teacher generation (phase process, cache, record log)"),
            ">= 0.95 (generation only)",
            3,
            {"prompts": args.teacher_prompts, "model": model_name, "max_new_tokens": 48},
        ),
    )
    evaluation = record(
        "evaluate",
        side_by_side(
            eval_runs,
            ("hf_generate", "HF generate, batches of 32 (the official code's way)"),
            ("vllm", "llm2llm's vLLM evaluation path"),
            ">= 3x (generation only)",
            2,
            {"examples": args.eval_examples, "dataset": "snips test (fixed sample)", "model": model_name},
        ),
    )
    print(
        f"teacher: raw LLM.generate {teacher['baseline']['median_s']} s, llm2llm {teacher['llm2llm']['median_s']} s, "
        f"ratio {teacher['ratio']} (goal >= 0.95); same outputs {100 * teacher['same_outputs']:.0f} %"
    )
    print(
        f"evaluate: HF generate {evaluation['baseline']['median_s']} s, vLLM {evaluation['llm2llm']['median_s']} s, "
        f"{evaluation['ratio']}x (goal >= 3x); same outputs {100 * evaluation['same_outputs']:.0f} %"
    )


if __name__ == "__main__":
    main()
