"""The LLM2LLM loop (Lee et al., 2024), top to bottom. Design: docs/loop.md.

    iteration 0: fine-tune the base student on the seed, evaluate on test  (= plain fine-tuning)
    each iteration i:
        evaluate the student on the seed examples
        for every wrong seed example, the teacher writes K new examples
        filter them (parse, validity, duplicates, near-duplicates, test overlap)
        training set i+1 = training set i + survivors; fine-tune again from the base; evaluate on test

The baselines (loop.method, llm2llm/methods.py) share every step but where new examples come from.

Every phase leaves a marker file (PHASE_MARKERS); rerunning the same command skips the phases whose
marker exists, and an unfinished phase continues from what it stored (see store.py). Train,
evaluate and generate each run in their own processes on the devices the GPU plan gives them
(llm2llm/runtime/); the plan is checked before any weights load.
"""

from __future__ import annotations

import errno
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

from llm2llm.config import RunConfig
from llm2llm.context import RunContext
from llm2llm.data import sample
from llm2llm.evaluation import evaluate
from llm2llm.filtering import filter_examples
from llm2llm.iteration0 import shared_iteration0
from llm2llm.methods import augment
from llm2llm.preflight import Facts, preflight
from llm2llm.private import make_private, private_folder
from llm2llm.report import write_report
from llm2llm.rundir import RunDir
from llm2llm.runtime.phases import FULL_ERRNOS, DiskFull, preload_phase_modules
from llm2llm.runtime.runner import PhaseRunner
from llm2llm.selection import select_iteration, split_accuracy
from llm2llm.store import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json, read_jsonl
from llm2llm.training import TrainRequest, train_from_file, write_request

log = logging.getLogger(__name__)

# A phase of iteration `it` is done when its marker exists (paths in runs/<run>/): a rerun reads the
# phase's result from it instead of running the phase. The report has none: it is redone each time.
PHASE_MARKERS = {
    "train": "iter_{it:03d}/train_log.json",  # the student folder beside it may be pruned (prune_students)
    "evaluate": "iter_{it:03d}/scores.json",
    "generate": "iter_{it:03d}/candidates.jsonl",
    "filter": "iter_{it:03d}/filter_decisions.jsonl",
    "merge": "iter_{next:03d}/train.jsonl",  # the next iteration's training set
    "report": None,
}
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
    ctx = prepare(config)
    with ctx.run, PhaseRunner(ctx.run.path, ctx.plan, config, ctx.run.lock_fd) as ctx.runner:
        for it in range(ctx.iterations + 1):
            train_set = read_jsonl(ctx.iteration_dir(it) / "train.jsonl")

            pool = train_set if config.loop.augment_synthetic else ctx.seed
            splits = {"test": ctx.test, **({"validation": ctx.validation} if ctx.validation else {}), "seed": pool}
            # Iteration 0 (plain fine-tuning) comes from another run with the same inputs when one made it.
            with shared_iteration0(ctx, it):
                # 1. Fine-tune the student on the training set (from the base checkpoint, or the last student).
                run_phase(ctx, it, "train", lambda: train(ctx, it, train_set))
                prune_students(ctx, newest=it, scored=it)

                # 2. Evaluate it on the test (and validation) split, and on the seed examples to find its mistakes.
                scores = run_phase(ctx, it, "evaluate", lambda: evaluate(ctx, it, splits))

            if it < ctx.iterations:
                # 3. The teacher writes new examples for each wrong seed example (a baseline: its own).
                wrong = [ex for ex in pool if ex["id"] in set(scores["seed"]["wrong_ids"])]
                candidates = run_phase(ctx, it, "generate", lambda: augment(ctx, it, wrong))

                # 4. Filter them; the survivors join the next training set.
                decisions = run_phase(ctx, it, "filter", lambda: filter_candidates(ctx, candidates, train_set))
                run_phase(ctx, it, "merge", lambda: train_set + [d["example"] for d in decisions if d["kept"]])

            run_phase(ctx, it, "report", lambda: write_report(ctx.run, ctx.task, ctx.data.notes))
        # The run hands over the student that is best on validation; the last one stays beside it.
        prune_students(ctx, newest=ctx.iterations, scored=ctx.iterations + 1)
    return ctx.run.path


def run_phase(ctx: RunContext, it: int, name: str, compute: Callable):
    """The phase's stored result if its marker exists; else compute(), timed (timings.jsonl) and
    stored as the marker in one atomic write."""
    marker = PHASE_MARKERS[name] and ctx.run.path / PHASE_MARKERS[name].format(it=it, next=it + 1)
    if marker and marker.exists():
        return read_jsonl(marker) if marker.suffix == ".jsonl" else read_json(marker)
    ctx.run.claim.check()  # still ours: a holder stopped past its lease finds the run taken over and stops
    try:
        with ctx.run.phase(it, name):
            result = compute()
            if marker:
                (atomic_write_jsonl if marker.suffix == ".jsonl" else atomic_write_json)(marker, result)
    except OSError as e:  # the driver's own writes in this phase (records, markers) on a full disk: one line
        if e.errno not in FULL_ERRNOS:
            raise
        raise DiskFull(f"{name} iter_{it:03d}", e.filename, ctx.run.path, quota=e.errno == errno.EDQUOT) from e
    return result


def prepare(config: RunConfig) -> RunContext:
    """The pre-flight (llm2llm/preflight.py: nothing is written until config, data, models, the GPU
    plan and the run directory pass; `doctor` runs the same checks), then the run directory: the
    config, data and models pinned, the seed and evaluation samples fixed, iteration 0's training set
    (the seed)."""
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


def _open_run(run: RunDir, facts: Facts) -> RunContext:
    """The run directory's state: the plan, the seed and evaluation samples fixed, the models pinned,
    iteration 0's training set (the seed)."""
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
            for ex in sample(data.train, config.data.seed_size, config.data.seed, data.task, config.data.stratified)
        ],
    )
    seed = [by_id[i] for i in seed_ids]
    test = fixed_sample(run, "test_ids.json", data.test, config.data.test_size, config.data.seed)
    # Scored every iteration beside test, to choose recipes and iterations without looking at test.
    validation = fixed_sample(run, "validation_ids.json", data.validation, facts.validation_size, config.data.seed)
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
    return RunContext(config, data, run, plan, facts.student, facts.teacher, seed, test, validation)


def fixed_sample(run: RunDir, name: str, examples: list[dict], size: int, seed: int) -> list[dict]:
    """A split's evaluation sample, drawn once and pinned in the run directory (0 = the whole split)."""
    if not size or not examples:
        return examples
    by_id = {ex["id"]: ex for ex in examples}
    return [by_id[i] for i in run.fixed_ids(name, lambda: [ex["id"] for ex in sample(examples, size, seed)])]


def train(ctx: RunContext, it: int, train_set: list[dict]) -> dict:
    """Step 1: the training ranks write iter_NNN/student/ (atomically) with its train_log.json."""
    config, student = ctx.config, ctx.student(it)
    if not (student / "train_log.json").exists():  # else trained already, killed before the marker
        init = ctx.student(it - 1) if config.loop.continue_training and it else None
        tb_dir = ctx.run.path / "tb" / f"iter_{it:03d}" if config.train.tensorboard else None
        request = TrainRequest(
            ctx.student_base, train_set, ctx.task, config.train, student, init, config.student.loading(), tb_dir
        )
        try:
            ctx.runner.train(f"train iter_{it:03d}", partial(write_request, request), student, train_from_file)
        except DiskFull as e:  # say what a checkpoint of this student takes (its weights, fp32 as trained)
            raise e.needing(sum(f.stat().st_size for f in ctx.student_base.glob("*.safetensors"))) from None
    return read_json(student / "train_log.json")


def prune_students(ctx: RunContext, newest: int, scored: int) -> None:
    """Students stay on disk while a run may hand them over: the newest one, and the one selected on
    validation among iterations 0..scored-1 (llm2llm/selection.py). With loop.keep_checkpoints, all."""
    if ctx.config.loop.keep_checkpoints:
        return
    scores = {j: read_json(ctx.iteration_dir(j) / "scores.json") for j in range(scored)}
    selected = select_iteration({j: split_accuracy(s, "validation") for j, s in scores.items()})
    keep = {newest} | ({selected.iteration} if selected else set())
    for j in range(newest):
        if j not in keep and ctx.student(j).exists():
            shutil.rmtree(ctx.student(j))


def filter_candidates(ctx: RunContext, candidates: list[dict], train_set: list[dict]) -> list[dict]:
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
