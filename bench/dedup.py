"""Near-duplicate filtering: llm2llm's filter against the official approach, same data, same
decisions required.

    python bench/dedup.py [--candidates 5000] [--pool 5000] [--repeats 5] [--baseline-repeats 1]

Data: SNIPS training utterances (real near-duplicates: many share a template), shuffled with
seed 0; the first `pool` form the training pool, the next `candidates` are filtered against it.
Baseline: the self-instruct/Alpaca code the official LLM2LLM filter follows: rouge_score's
tokenizer, then `rouge_scorer._score_lcs` of each candidate against every pool item through a
multiprocessing Pool with one worker per core, kept iff the max F1 <= threshold, kept candidates
joining the pool. (The Alpaca script opens a new Pool per candidate; here it is opened once, which
favours the baseline.) llm2llm: `llm2llm.filtering.filter_examples`, the function a run calls.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from functools import partial
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import record, side, timed  # noqa: E402

THRESHOLD = 0.7  # self-instruct's; llm2llm's default (loop.near_duplicate_rouge_l, as the LLM2LLM code) is 0.95


def snips_split(data_dir: Path | None, n_pool: int, n_candidates: int):
    from llm2llm.config import DataConfig
    from llm2llm.data import load_task_data

    data = load_task_data(DataConfig(dataset="snips", **({"data_dir": str(data_dir)} if data_dir else {})))
    task = data.task
    rows = [ex for ex in data.train if task.generated_problem(ex) is None]
    random.Random(0).shuffle(rows)
    if n_pool + n_candidates > len(rows):
        raise SystemExit(f"SNIPS has {len(rows)} usable training rows; ask for at most that many in all")
    return task, rows[:n_pool], rows[n_pool : n_pool + n_candidates]


def official_keep(candidates: list[str], pool: list[str], threshold: float, workers: int) -> list[bool]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens = [scorer._tokenizer.tokenize(t) for t in pool]
    keep = []
    with get_context("fork").Pool(workers) as workers_pool:
        for text in candidates:
            tokens = scorer._tokenizer.tokenize(text)
            scores = workers_pool.map(partial(rouge_scorer._score_lcs, tokens), pool_tokens)
            if max((s.fmeasure for s in scores), default=0.0) > threshold:
                keep.append(False)
            else:
                keep.append(True)
                pool_tokens.append(tokens)
    return keep


def llm2llm_keep(task, candidates: list[dict], pool: list[dict], threshold: float) -> list[bool]:
    from llm2llm.filtering import filter_examples

    decisions = filter_examples(
        [{"key": ex["id"], "example": ex} for ex in candidates],
        task,
        [task.key_text(ex) for ex in pool],
        [],
        threshold,
    )
    return [d["kept"] for d in decisions]


def run(
    n_candidates: int,
    n_pool: int,
    repeats: int,
    baseline_repeats: int,
    data_dir: Path | None = None,
    threshold: float = THRESHOLD,
) -> dict:
    task, pool, candidates = snips_split(data_dir, n_pool, n_candidates)
    workers = len(os.sched_getaffinity(0))
    texts, pool_texts = [task.key_text(ex) for ex in candidates], [task.key_text(ex) for ex in pool]
    _, ours_runs, ours = timed(lambda: llm2llm_keep(task, candidates, pool, threshold), repeats)
    _, base_runs, official = timed(lambda: official_keep(texts, pool_texts, threshold, workers), baseline_repeats)
    differ = [candidates[i]["id"] for i, (a, b) in enumerate(zip(ours, official)) if a != b]
    baseline, mine = (
        side(f"rouge_score _score_lcs, multiprocessing Pool({workers})", base_runs),
        side("filter_examples", ours_runs),
    )
    return {
        "ratio": round(baseline["median_s"] / mine["median_s"], 1),
        "goal": ">= 20x, identical decisions",
        "baseline": baseline,
        "llm2llm": mine,
        "sizes": {
            "candidates": n_candidates,
            "pool": n_pool,
            "threshold": threshold,
            "data": "SNIPS train, shuffled (seed 0)",
        },
        "kept": sum(ours),
        "identical_decisions": not differ,
        "differing_ids": differ[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of llm2llm's filter (the median is reported)"
    )
    parser.add_argument(
        "--baseline-repeats", type=int, default=1, help="timed runs of the baseline (minutes each at full size)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help="ROUGE-L F1 above which a candidate is dropped; the work does not depend on it, the decisions do",
    )
    args = parser.parse_args()
    entry = record(
        "dedup", run(args.candidates, args.pool, args.repeats, args.baseline_repeats, threshold=args.threshold)
    )
    print(
        f"dedup: {entry['sizes']['candidates']} candidates x {entry['sizes']['pool']} pool: official "
        f"{entry['baseline']['median_s']} s, llm2llm {entry['llm2llm']['median_s']} s, {entry['ratio']}x; "
        f"kept {entry['kept']}; identical decisions: {entry['identical_decisions']}"
    )
    if not entry["identical_decisions"]:
        sys.exit(f"decisions differ from the official approach for {len(entry['differing_ids'])}+ candidates")


if __name__ == "__main__":
    main()
