"""Step 2 of the loop: the student answers each split (test, validation, the seed examples) in one
engine start, and each split is scored. The seed examples may be answered several times by sampling
(seed_eval), to find the ones the student is unsure of."""

from __future__ import annotations

import random
from dataclasses import asdict

from llm2llm.config import SamplingConfig
from llm2llm.context import RunContext
from llm2llm.engines import render_chat
from llm2llm.records import Example, Scores, SplitScores
from llm2llm.store import atomic_write_json


def evaluate(ctx: RunContext, it: int, splits: dict[str, list[Example]]) -> Scores:
    """Run iteration `it`'s student over each split, predictions stored as they arrive
    (iter_NNN/predictions.jsonl): the scored splits greedily (student.eval_temperature), the seed
    examples as seed_eval says (greedy, or several sampled answers each). Returns per split: total,
    correct, invalid, wrong_ids; for a sampled split also how many answers there were and how many
    were right. With seed_eval.rank_by confidence, the seed split also gets each example's
    log-probability of its right answer (`confidence`), and its wrong_ids are the least confident."""
    config, task, it_dir = ctx.config, ctx.task, ctx.iteration_dir(it)
    tokenizer = ctx.student.tokenizer(it)
    budget = config.student.eval_max_new_tokens or task.max_answer_tokens(tokenizer)
    sampling = _sampling(config, splits, budget)
    samples = {split: config.seed_eval.samples if split == "seed" else 1 for split in splits}
    requests = [
        {"key": answer_key(split, ex, s), "split": split, "id": ex["id"], "sample": s, "prompt": prompt}
        for split, examples in splits.items()
        for ex in examples
        for prompt in [render_chat(tokenizer, task.prompt(ex))]
        for s in range(samples[split])
    ]
    if config.seed_eval.rank_by == "confidence":  # the log-probability of the right answer of each seed example
        sampling["confidence"] = SamplingConfig(temperature=0.0, max_new_tokens=1)
        requests += [
            {"key": f"confidence/{ex['id']}", "split": "confidence", "id": ex["id"],
             "prompt": render_chat(tokenizer, task.prompt(ex)), "target": task.target(ex)}
            for ex in splits["seed"]
        ]  # fmt: skip
    outputs, stats = ctx.student.answer(it, requests, sampling, f"evaluate {it_dir.name}")
    atomic_write_json(it_dir / "eval_stats.json", asdict(stats))
    summary = {split: score_split(ctx, split, examples, outputs, samples[split]) for split, examples in splits.items()}
    if "seed" in splits and config.seed_eval.rank_by == "confidence":
        confidence = {ex["id"]: float(outputs[f"confidence/{ex['id']}"]) for ex in splits["seed"]}
        summary["seed"].update(confidence=confidence, wrong_ids=weakest(confidence, config.seed_eval.weakest))
    if "seed" in splits and config.seed_eval.rank_by == "random":  # the control: as many, chosen blind
        ids = [ex["id"] for ex in splits["seed"]]
        summary["seed"]["wrong_ids"] = drawn(ids, config.seed_eval.weakest, f"{config.data.rng_seed}/{it}")
    return summary


def answer_key(split: str, ex: dict, sample: int) -> str:
    """A stored answer's key: sample s > 0 of a seed example has a key (and so a seed) of its own."""
    return f"{split}/{ex['id']}" + (f"/{sample}" if sample else "")


def _sampling(config, splits: dict[str, list[dict]], budget: int) -> dict[str, SamplingConfig]:
    """The scored splits at student.eval_temperature, the seed examples as seed_eval says."""
    temperature, seed = config.student.eval_temperature, config.train.seed
    sampling = {
        split: SamplingConfig(temperature=temperature, top_p=1.0, seed=seed, max_new_tokens=budget) for split in splits
    }
    seed_eval = config.seed_eval
    sampling["seed"] = SamplingConfig(
        temperature=seed_eval.temperature, top_p=seed_eval.top_p, seed=seed, max_new_tokens=budget
    )
    return sampling


def score_split(ctx: RunContext, split: str, examples: list[Example], outputs: dict[str, str], n: int) -> SplitScores:
    """One split's summary from its n answers per example: wrong if any answer is (or at least half,
    seed_eval.wrong_if majority); a classification split's confusion counts; the sampled counts."""
    task, wrong_if = ctx.task, ctx.config.seed_eval.wrong_if
    results = {ex["id"]: [task.score(outputs[answer_key(split, ex, s)], ex) for s in range(n)] for ex in examples}
    wrong = {i: sum(not r.correct for r in rs) for i, rs in results.items()}
    is_wrong = {i: w * 2 >= n if wrong_if == "majority" and n > 1 else w > 0 for i, w in wrong.items()}
    summary = {
        "total": len(results),
        "correct": sum(not w for w in is_wrong.values()),
        "invalid": sum(not rs[0].valid for rs in results.values()),
        "wrong_ids": [i for i, w in is_wrong.items() if w],
    }
    if n == 1 and task.type == "classification":  # gold label -> answer -> count ("" = no valid answer)
        confusion: dict[str, dict[str, int]] = {}
        for ex in examples:
            row = confusion.setdefault(ex["label"], {})
            answer = results[ex["id"]][0].prediction or ""
            row[answer] = row.get(answer, 0) + 1
        summary["confusion"] = confusion
    if n > 1:
        summary.update(
            samples=n,
            sampled_answers=n * len(results),
            sampled_correct=sum(r.correct for rs in results.values() for r in rs),
        )
    return summary


def target_count(how_many: float, total: int) -> int:
    """seed_eval.weakest as a number of seed examples: a count (>= 1) or a fraction (< 1) of them."""
    return min(total, int(how_many) if how_many >= 1 else max(1, round(how_many * total)))


def weakest(confidence: dict[str, float], how_many: float) -> list[str]:
    """The ids of the least confident examples, lowest log-probability first (ties: by id, so reruns
    target the same ones)."""
    return sorted(confidence, key=lambda i: (confidence[i], i))[: target_count(how_many, len(confidence))]


def drawn(ids: list[str], how_many: float, seed: str) -> list[str]:
    """As many ids as `weakest` would give, drawn at random with a string seed (the RNG seed and the
    iteration): the same draw on a rerun and on any machine, a different one each iteration."""
    rng = random.Random(seed)
    return sorted(rng.sample(sorted(ids), target_count(how_many, len(ids))))
