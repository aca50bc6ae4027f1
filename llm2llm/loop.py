"""The LLM2LLM loop (Lee et al., 2024), top to bottom. Design: docs/loop.md.

    iteration 0: fine-tune the base student on the seed, evaluate on test  (= plain fine-tuning)
    each iteration i:
        evaluate the student on the seed examples
        for every wrong seed example, the teacher writes K new examples
        filter them (parse, validity, duplicates, near-duplicates, test overlap)
        training set i+1 = training set i + survivors; fine-tune again from the base; evaluate on test

The baselines (loop.method, llm2llm/methods.py) share every step but where new examples come from.

Every phase leaves a marker file (rundir.PHASE_MARKERS); rerunning the same command skips the
phases whose marker exists, and an unfinished phase continues from what it stored (see store.py).
One phase runner owns every phase (llm2llm/runtime/runner.py: markers, timings, the claim, a full
disk); the steps talk to two roles (llm2llm/roles.py): the Student trains and answers, the Teacher
writes new examples, each in its own processes on the devices the GPU plan gives it. The plan is
checked before any weights load.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from llm2llm.config import RunConfig
from llm2llm.context import RunContext
from llm2llm.data import sample
from llm2llm.evaluation import evaluate
from llm2llm.filtering import filter_examples
from llm2llm.iteration0 import shared_iteration0
from llm2llm.methods import generate
from llm2llm.preflight import Facts, preflight
from llm2llm.private import make_private, private_folder
from llm2llm.records import Candidate, Decision, Example
from llm2llm.report import write_report
from llm2llm.roles import Student, Teacher
from llm2llm.rundir import RunDir
from llm2llm.runtime.phases import preload_phase_modules
from llm2llm.runtime.runner import PhaseRunner
from llm2llm.selection import select_iteration, split_accuracy
from llm2llm.store import atomic_write_jsonl, atomic_write_text, read_json, read_jsonl

log = logging.getLogger(__name__)

# What the phase processes' forkserver imports once, instead of each phase importing it again.
PHASE_MODULES = [
    "torch",
    "transformers.modeling_utils",
    "transformers.generation.utils",
    "transformers.trainer",
    "datasets",
    "llm2llm.generation",
    "llm2llm.training",
]


def boost(config: RunConfig) -> Path:
    """Run (or resume) the loop; returns the run directory."""
    make_private()  # what the run and its phases write is the user's alone
    preload_phase_modules(PHASE_MODULES)  # the forkserver imports them beside the pre-flight
    ctx, runner = prepare(config)
    student, teacher = ctx.student, ctx.teacher
    with ctx.run, runner, teacher:
        for it in range(ctx.iterations + 1):
            train_set = read_jsonl(ctx.iteration_dir(it) / "train.jsonl")

            pool = train_set if config.loop.augment_synthetic else ctx.seed
            splits = {"test": ctx.test, **({"validation": ctx.validation} if ctx.validation else {}), "seed": pool}
            # Iteration 0 (plain fine-tuning) comes from another run with the same inputs when one made it.
            with shared_iteration0(ctx, it):
                # 1. Fine-tune the student on the training set (from the base checkpoint, or the last student).
                runner.phase(it, "train", lambda: student.train(it, train_set))
                prune_students(ctx, newest=it, scored=it)

                # 2. Evaluate it on the test (and validation) split, and on the seed examples to find its mistakes.
                scores = runner.phase(it, "evaluate", lambda: evaluate(ctx, it, splits))

            if it < ctx.iterations:
                # 3. The teacher writes new examples for each wrong seed example (a baseline: its own).
                wrong = [ex for ex in pool if ex["id"] in set(scores["seed"]["wrong_ids"])]
                candidates = runner.phase(it, "generate", lambda: generate(ctx, it, wrong))

                # 4. Filter them; the survivors join the next training set.
                decisions = runner.phase(it, "filter", lambda: filter_candidates(ctx, candidates, train_set))
                runner.phase(it, "merge", lambda: train_set + [d["example"] for d in decisions if d["kept"]])

            runner.phase(it, "report", lambda: write_report(ctx.run, ctx.task, ctx.data.notes))
        # The run hands over the student that is best on validation; the last one stays beside it.
        prune_students(ctx, newest=ctx.iterations, scored=ctx.iterations + 1)
    return ctx.run.path


def prepare(config: RunConfig) -> tuple[RunContext, PhaseRunner]:
    """The pre-flight (llm2llm/preflight.py: nothing is written until config, data, models, the GPU
    plan and the run directory pass; `doctor` runs the same checks), then the run directory: the
    config, data and models pinned, the seed and evaluation samples fixed, iteration 0's training set
    (the seed); then the phase runner and the two roles on it."""
    facts = preflight(config)
    private_folder(config.cache_path(), "generation cache", group=config.cache_group)
    if config.loop.share_iteration0:
        private_folder(config.iteration0_cache_path(), "iteration-0 cache")
    run = RunDir(config)
    try:
        return _open_run(run, facts)
    except BaseException:
        run.close()
        raise


def _open_run(run: RunDir, facts: Facts) -> tuple[RunContext, PhaseRunner]:
    """The run directory's state: the plan, the seed and evaluation samples fixed, the models pinned,
    iteration 0's training set (the seed); the runner and the roles."""
    config, data, plan = facts.config, facts.data, facts.plan
    run.pin_data(facts.fingerprints)
    plan_file = run.path / "plan.txt"
    if not plan_file.exists() or plan_file.read_text() != plan.table() + "\n":
        atomic_write_text(plan_file, plan.table() + "\n")
    by_id = {ex["id"]: ex for ex in data.train}
    seed_ids = run.fixed_ids(
        "seed_ids.json",
        lambda: [
            ex["id"]
            for ex in sample(
                data.train, config.data.seed_size, config.data.rng_seed, data.task, config.data.stratified
            )
        ],
    )
    seed = [by_id[i] for i in seed_ids]
    test = fixed_sample(run, "test_ids.json", data.test, config.data.test_size, config.data.rng_seed)
    # Scored every iteration beside test, to choose recipes and iterations without looking at test.
    validation = fixed_sample(run, "validation_ids.json", data.validation, facts.validation_size, config.data.rng_seed)
    log.info(
        "run %s: %s, %d seed examples, %d test examples, %d validation examples",
        run.path,
        data.task.name,
        len(seed),
        len(test),
        len(validation),
    )
    run.pin_models(facts.models())
    first_train = run.iteration(0) / "train.jsonl"
    if not first_train.exists():
        atomic_write_jsonl(first_train, seed)
    runner = PhaseRunner(run, plan, config)
    fingerprints = facts.model_fingerprints  # computed once, by the pre-flight's model checks
    student = Student(config, data.task, facts.student, fingerprints["student"], run, runner)
    teacher = Teacher(config, data.task, facts.teacher, fingerprints["teacher"], run, runner)
    return RunContext(config, data, run, seed, test, validation, student, teacher), runner


def fixed_sample(run: RunDir, name: str, examples: list[dict], size: int, seed: int) -> list[dict]:
    """A split's evaluation sample, drawn once and pinned in the run directory (0 = the whole split)."""
    if not size or not examples:
        return examples
    by_id = {ex["id"]: ex for ex in examples}
    return [by_id[i] for i in run.fixed_ids(name, lambda: [ex["id"] for ex in sample(examples, size, seed)])]


def prune_students(ctx: RunContext, newest: int, scored: int) -> None:
    """Students stay on disk while a run may hand them over: the newest one, and the one selected on
    validation among iterations 0..scored-1 (llm2llm/selection.py). With loop.keep_checkpoints, all."""
    if ctx.config.loop.keep_checkpoints:
        return
    scores = {j: read_json(ctx.iteration_dir(j) / "scores.json") for j in range(scored)}
    selected = select_iteration({j: split_accuracy(s, "validation") for j, s in scores.items()})
    keep = {newest} | ({selected.iteration} if selected else set())
    for j in range(newest):
        if j not in keep and ctx.student.checkpoint(j).exists():
            shutil.rmtree(ctx.student.checkpoint(j))


def filter_candidates(ctx: RunContext, candidates: list[Candidate], train_set: list[Example]) -> list[Decision]:
    """Step 4: a decision per candidate (kept, or why not). EDA's edits are meant to be near-copies
    of their source, so only its exact duplicates are dropped."""
    task, config = ctx.task, ctx.config
    return filter_examples(
        candidates,
        task,
        [task.key_text(ex) for ex in train_set],
        [task.key_text(ex) for ex in ctx.data.test + ctx.data.validation],
        1.0 if config.loop.method == "eda" else config.loop.near_duplicate_rouge_l,
    )
