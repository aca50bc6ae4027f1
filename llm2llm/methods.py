"""Where a method's new examples come from (step 3 of the loop, `loop.method`). Every method shares
the other steps; plain fine-tuning stops after iteration 0.

  llm2llm    the teacher writes teacher.per_wrong examples like each seed example the student got wrong
             (teacher.coverage: the first time also a few for each one it got right; teacher.paraphrase:
             the first time also paraphrases of every seed example)
  one-shot   the same, once, with the whole budget at once (baselines.one_shot_*)
  auggpt     the teacher paraphrases every seed example (baselines.auggpt_per_example)
  eda        EDA's word operations on every seed example (baselines.eda_*; WordNet, no model)
"""

from __future__ import annotations

import os
import random
from collections import Counter

from llm2llm.config import RunConfig
from llm2llm.context import RunContext
from llm2llm.data import TaskData, check_sample_sizes
from llm2llm.eda import EDA, load_wordnet, wordnet_check
from llm2llm.errors import UserError
from llm2llm.records import Candidate, Example
from llm2llm.store import RecordLog
from llm2llm.tasks import Task
from llm2llm.teacher import teacher_generate


def check_inputs(data: TaskData, config: RunConfig) -> None:
    """What boost, doctor and validate refuse about a run's data and environment before anything runs."""
    check_method(data.task, config)
    check_sample_sizes(data, config.data)
    if config.teacher.allocate == "validation_errors" and config.loop.method == "llm2llm" and not data.validation:
        raise UserError(
            f"teacher.allocate validation_errors needs a validation split; task '{data.task.name}' has none (give "
            "it one: validation_from_train in its spec), or use even or seed_errors"
        )
    teacher = config.teacher
    asks_teacher = config.loop.method in ("llm2llm", "one-shot", "auggpt") or config.teacher.label_check
    if asks_teacher and teacher.engine == "openai" and not os.environ.get(teacher.api_key_env):
        raise UserError(
            f"teacher.engine openai sends the API key from ${teacher.api_key_env}, which is not set; export it (any "
            f"value for a server without a key), or name the variable that holds it in teacher.api_key_env"
        )


def check_method(task: Task, config: RunConfig) -> None:
    """Refuse a method the task type has no implementation for, or EDA without WordNet, before any work."""
    method = config.loop.method
    if method in ("auggpt", "eda") and task.type != "classification":
        raise UserError(
            f"loop.method {method} is implemented for classification tasks; "
            f"task '{task.name}' is {task.type}: use llm2llm, one-shot or plain"
        )
    if method == "eda":
        wordnet_check(config.baselines.wordnet_dir)
    if config.train.balance_labels and task.type != "classification":
        raise UserError(
            f"train.balance_labels balances the training set by label; task '{task.name}' is {task.type}: "
            "set train.balance_labels=false"
        )
    if config.teacher.paraphrase and method == "llm2llm" and task.type != "classification":
        raise UserError(
            f"teacher.paraphrase asks for paraphrases, implemented for classification tasks; task '{task.name}' is "
            f"{task.type}: set teacher.paraphrase=0 (--set, or `teacher: {{paraphrase: 0}}` in the task spec)"
        )
    if config.teacher.allocate == "validation_errors" and method == "llm2llm" and task.type != "classification":
        raise UserError(
            f"teacher.allocate validation_errors spreads the budget by label; task '{task.name}' is {task.type}: "
            "use even or seed_errors"
        )


def generate(ctx: RunContext, it: int, wrong: list[Example]) -> list[Candidate]:
    """Candidate examples for the next training set, by the run's method, in a fixed order."""
    config, baselines, seed = ctx.config, ctx.config.baselines, ctx.seed
    method = config.loop.method
    if method == "eda":
        return eda_candidates(ctx, it)
    if method == "auggpt":
        return teacher_generate(ctx, it, [(ex, "paraphrase", baselines.auggpt_per_example) for ex in seed])
    asks = [(ex, "similar", count) for ex, count in similar_counts(ctx, it, wrong)]
    if method == "llm2llm" and config.teacher.paraphrase and it == 0:  # every seed example in its own words first
        asks = [(ex, "paraphrase", config.teacher.paraphrase) for ex in seed] + asks
    return teacher_generate(ctx, it, asks)


def similar_counts(ctx: RunContext, it: int, wrong: list[Example]) -> list[tuple[Example, int]]:
    """How many new examples like each source the teacher is asked for: LLM2LLM's K per wrong seed
    example (teacher.coverage, teacher.allocate: spread otherwise), or one-shot's whole budget at once."""
    config, baselines, seed = ctx.config, ctx.config.baselines, ctx.seed
    if config.loop.method == "llm2llm" and config.teacher.coverage and it == 0:  # every seed example, the wrong ones K
        wrong_ids = {ex["id"] for ex in wrong}
        return [(ex, config.teacher.per_wrong if ex["id"] in wrong_ids else config.teacher.coverage) for ex in seed]
    if config.loop.method == "llm2llm" and config.teacher.allocate != "even":
        budget = config.teacher.per_wrong * len(wrong)  # the paper's budget, spread by the weakness signal
        weights = allocation_weights(ctx, it, config.teacher.allocate)
        return list(zip(seed, spread(budget, [weights[ex["id"]] for ex in seed])))
    if config.loop.method == "llm2llm":
        return [(ex, config.teacher.per_wrong) for ex in wrong]
    if baselines.one_shot_total:  # a total (e.g. what an llm2llm run generated), spread evenly
        share, extra = divmod(baselines.one_shot_total, max(1, len(wrong)))
        return [(ex, share + (i < extra)) for i, ex in enumerate(wrong)]
    return [(ex, baselines.one_shot_per_wrong or config.teacher.per_wrong * config.loop.iterations) for ex in wrong]


def allocation_weights(ctx: RunContext, it: int, how: str) -> dict[str, float]:
    """Each seed example's share of the teacher's budget (teacher.allocate), from iteration `it`'s
    evaluation: its wrong sampled answers (seed_errors), or its label's error rate on the validation
    split divided among the seed examples of that label (validation_errors)."""
    task, seed = ctx.task, ctx.seed
    predictions = RecordLog(ctx.iteration_dir(it) / "predictions.jsonl").records.values()
    wrong: Counter = Counter()
    if how == "seed_errors":
        by_id = {ex["id"]: ex for ex in seed}
        for record in predictions:
            if record.get("split") == "seed" and record["id"] in by_id:
                wrong[record["id"]] += not task.score(record["output"], by_id[record["id"]]).correct
        return {ex["id"]: float(wrong[ex["id"]]) for ex in seed}
    by_id = {ex["id"]: ex for ex in ctx.validation}
    scored: Counter = Counter()
    for record in predictions:
        if record.get("split") == "validation" and record["id"] in by_id:
            label = task.stratum(by_id[record["id"]])
            scored[label] += 1
            wrong[label] += not task.score(record["output"], by_id[record["id"]]).correct
    per_label = Counter(task.stratum(ex) for ex in seed)
    return {
        ex["id"]: wrong[task.stratum(ex)] / scored[task.stratum(ex)] / per_label[task.stratum(ex)]
        if scored[task.stratum(ex)]
        else 0.0
        for ex in seed
    }


def spread(budget: int, weights: list[float]) -> list[int]:
    """`budget` new examples split in proportion to `weights` (largest remainders; ties to the first),
    so the counts add up to the budget exactly; all zero weights: nothing is asked."""
    total = sum(weights)
    if total <= 0 or budget <= 0:
        return [0] * len(weights)
    exact = [budget * w / total for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: budget - sum(counts)]:
        counts[i] += 1
    return counts


def eda_candidates(ctx: RunContext, it: int) -> list[Candidate]:
    config = ctx.config
    eda = EDA(load_wordnet(config.baselines.wordnet_dir), config.baselines.eda_alpha, config.baselines.eda_num_aug)
    candidates = []
    for ex in ctx.seed:
        rng = random.Random(f"{config.data.rng_seed}/eda/{ex['id']}")
        for j, text in enumerate(eda.augment(ex["text"], rng)):
            example = {
                "id": f"eda{it}-{ex['id']}-{j}",
                "text": text,
                "label": ex["label"],
                "parent_id": ex["id"],
                "iteration": it,
            }
            candidates.append({"key": f"eda:{ex['id']}:{j}", "example": example})
    return candidates
