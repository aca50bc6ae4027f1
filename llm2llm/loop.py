"""The LLM2LLM loop (Lee et al., 2024), top to bottom. Design: docs/loop.md.

    iteration 0: fine-tune the base student on the seed, evaluate on test  (= plain fine-tuning)
    each iteration i:
        evaluate the student on the seed examples
        for every wrong seed example, the teacher writes K new examples
        filter them (parse, validity, duplicates, near-duplicates, test overlap)
        training set i+1 = training set i + survivors; fine-tune again from the base; evaluate on test

The baselines (loop.method) share every step but where new examples come from (`augment`):
plain stops after iteration 0; one-shot, auggpt and eda make one augmented iteration from
respectively the teacher on the wrong seed examples (all at once), the teacher paraphrasing every
seed example, and EDA's word operations on every seed example.

Every phase leaves a file in runs/<run>/iter_NNN/ that marks it done; rerunning the same command
skips finished phases and continues unfinished ones from what they stored (see store.py).
Train, evaluate and generate each run in their own processes on the devices the GPU plan gives
them (launcher/gpu_plan.py, launcher/runner.py); the plan is checked before any weights load.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from launcher.gpu_plan import plan_for_run
from launcher.runner import PhaseRunner

from llm2llm.config import RunConfig, SamplingConfig
from llm2llm.data import load_task_data, sample, sample_count
from llm2llm.eda import EDA, load_wordnet, wordnet_check
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat
from llm2llm.errors import UserError
from llm2llm.filtering import filter_examples
from llm2llm.generation import generate_cached, request_key
from llm2llm.models import checked_model, fingerprint
from llm2llm.report import write_report
from llm2llm.rundir import RunDir
from llm2llm.store import RecordLog, atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json, read_jsonl
from llm2llm.tasks import Task
from llm2llm.training import TrainRequest

log = logging.getLogger(__name__)


def boost(config: RunConfig) -> Path:
    data = load_task_data(config.data)
    task = data.task
    check_method(task, config)
    student_base = checked_model(config.student.model, **config.student.loading())
    teacher_path = checked_model(config.teacher.model, **config.teacher.loading())
    plan = plan_for_run(config, teacher_path, student_base)  # reads config.json files only
    plan.raise_if_impossible()
    sample_count(len(data.train), config.data.seed_size)  # before the run directory exists: a bad size leaves nothing
    if config.data.test_size:
        sample_count(len(data.test), config.data.test_size)
    validation_size = config.data.validation_size
    if validation_size is None:  # as many as test (capped by the split), or the whole split with the whole test
        validation_size = min(config.data.test_size, len(data.validation)) if config.data.test_size else 0
    elif validation_size and data.validation:
        sample_count(len(data.validation), validation_size)
    run = RunDir(config)
    plan_file = run.path / "plan.txt"
    if not plan_file.exists() or plan_file.read_text() != plan.table() + "\n":
        atomic_write_text(plan_file, plan.table() + "\n")

    by_id = {ex["id"]: ex for ex in data.train}
    seed_ids = run.fixed_ids("seed_ids.json", lambda: [ex["id"] for ex in sample(
        data.train, config.data.seed_size, config.data.seed, task, config.data.stratified)])
    seed = [by_id[i] for i in seed_ids]
    test = fixed_sample(run, "test_ids.json", data.test, config.data.test_size, config.data.seed)
    # Scored every iteration beside test, to choose recipes and iterations without looking at test.
    validation = fixed_sample(run, "validation_ids.json", data.validation, validation_size, config.data.seed)
    log.info("run %s: %s, %d seed examples, %d test examples, %d validation examples",
             run.path, task.name, len(seed), len(test), len(validation))
    run.pin_models({role: {"name": name, "path": str(path.resolve()), "fingerprint": fingerprint(path)}
                    for role, name, path in (("student", config.student.model, student_base),
                                             ("teacher", config.teacher.model, teacher_path))})

    first_train = run.iteration(0) / "train.jsonl"
    if not first_train.exists():
        atomic_write_jsonl(first_train, seed)

    previous_student = None
    with PhaseRunner(run.path, plan, config, run.lock_fd) as runner:  # phases in their own processes, on the plan's devices
        iterations = config.planned_iterations()
        for it in range(iterations + 1):
            it_dir = run.iteration(it)
            train_set = read_jsonl(it_dir / "train.jsonl")
            last = it == iterations

            # 1. Fine-tune the student (from the base checkpoint, or the last student if asked).
            student = it_dir / "student"
            if not (it_dir / "train_log.json").exists():  # the student folder itself may be pruned later
                with run.phase(it, "train"):
                    if not (student / "train_log.json").exists():
                        init = previous_student if config.loop.continue_training else None
                        runner.train(f"train {it_dir.name}", TrainRequest(student_base, train_set, task, config.train, student, init, config.student.loading()), it_dir)
                    atomic_write_text(it_dir / "train_log.json", (student / "train_log.json").read_text())

            # 2. Evaluate it on the test split and on the seed examples (or the whole training set).
            pool = train_set if config.loop.augment_synthetic else seed
            with run.phase(it, "evaluate"):
                splits = {"test": test, **({"validation": validation} if validation else {}), "seed": pool}
                scores = evaluate(student, student_base, task, splits, it_dir, config, runner)

            decisions_path = it_dir / "filter_decisions.jsonl"
            if not last and not decisions_path.exists():
                # 3. The teacher writes new examples for each wrong seed example (or a baseline's).
                wrong_ids = set(scores["seed"]["wrong_ids"])
                wrong = [ex for ex in pool if ex["id"] in wrong_ids]
                with run.phase(it, "generate"):
                    candidates = augment(wrong, seed, task, teacher_path, it, it_dir, run, config, runner)

                # 4. Filter them; the survivors join the next training set. EDA's edits are meant
                # to be near-copies of their source, so only its exact duplicates are dropped.
                with run.phase(it, "filter"):
                    decisions = filter_examples(
                        candidates, task, [task.key_text(ex) for ex in train_set],
                        [task.key_text(ex) for ex in data.test + data.validation],
                        1.0 if config.loop.method == "eda" else config.loop.near_duplicate_rouge_l)
                    atomic_write_jsonl(decisions_path, decisions)
            if not last:
                next_train = run.iteration(it + 1) / "train.jsonl"
                if not next_train.exists():
                    with run.phase(it, "merge"):
                        kept = [d["example"] for d in read_jsonl(decisions_path) if d["kept"]]
                        atomic_write_jsonl(next_train, train_set + kept)

            with run.phase(it, "report"):
                # A finished iteration's checkpoint is only needed to continue training from it.
                if previous_student and previous_student.exists() and not config.loop.keep_checkpoints:
                    shutil.rmtree(previous_student)
                write_report(run, task, data.notes)
            previous_student = student
    return run.path


def fixed_sample(run: RunDir, name: str, examples: list[dict], size: int, seed: int) -> list[dict]:
    """A split's evaluation sample, drawn once and pinned in the run directory (0 = the whole split)."""
    if not size or not examples:
        return examples
    by_id = {ex["id"]: ex for ex in examples}
    return [by_id[i] for i in run.fixed_ids(name, lambda: [ex["id"] for ex in sample(examples, size, seed)])]


def check_method(task: Task, config: RunConfig) -> None:
    """Refuse a method the task type has no implementation for, or EDA without WordNet, before any work."""
    method = config.loop.method
    if method in ("auggpt", "eda") and task.type != "classification":
        raise UserError(f"loop.method {method} is implemented for classification tasks; "
                        f"task '{task.name}' is {task.type}: use llm2llm, one-shot or plain")
    if method == "eda":
        wordnet_check(config.baselines.wordnet_dir)


def evaluate(student: Path, base: Path, task: Task, splits: dict[str, list[dict]], it_dir: Path, config: RunConfig,
             runner: PhaseRunner | None = None) -> dict:
    """Run the student over each split, predictions stored as they arrive: the scored split greedily
    (student.eval_temperature), the seed examples as seed_eval says (greedy, or several sampled
    answers each). Returns (and stores in scores.json) per split: total, correct, invalid,
    wrong_ids; for the seed also how many sampled answers there were and how many were right."""
    if (it_dir / "scores.json").exists():
        return read_json(it_dir / "scores.json")
    predictions_path = it_dir / "predictions.jsonl"
    tokenizer = load_tokenizer(student if student.exists() else base, config.student.trust_remote_code)
    budget = config.student.eval_max_new_tokens or task.max_answer_tokens(tokenizer)
    seed_eval = config.seed_eval
    sampling = {split: SamplingConfig(temperature=config.student.eval_temperature, top_p=1.0, seed=config.train.seed,
                                      max_new_tokens=budget) for split in splits}
    sampling["seed"] = SamplingConfig(temperature=seed_eval.temperature, top_p=seed_eval.top_p, seed=config.train.seed,
                                      max_new_tokens=budget)
    samples = {split: seed_eval.samples if split == "seed" else 1 for split in splits}
    # Sample s > 0 of a seed example gets a key (and so a seed) of its own.
    requests = [{"key": f"{split}/{ex['id']}" + (f"/{s}" if s else ""), "split": split, "id": ex["id"], "sample": s,
                 "prompt": render_chat(tokenizer, task.prompt(ex))}
                for split, examples in splits.items() for ex in examples for s in range(samples[split])]
    adapter = (student / "adapter_config.json").exists()
    options = {**config.vllm.model_dump(), **config.student.loading(), **(runner.plan.vllm_options("evaluate") if runner else {})}
    engine = EngineSpec(config.student.engine, base if adapter else student, student if adapter else None, options)
    outputs, stats = generate_cached(engine, requests, predictions_path, sampling, config.student.eval_batch_size,
                                     f"evaluate {it_dir.name}", runner=runner, role="evaluate")
    atomic_write_json(it_dir / "eval_stats.json", asdict(stats))
    summary = {}
    for split, examples in splits.items():
        n = samples[split]
        results = {ex["id"]: [task.score(outputs[f"{split}/{ex['id']}" + (f"/{s}" if s else "")], ex) for s in range(n)]
                   for ex in examples}
        wrong = {i: sum(not r.correct for r in rs) for i, rs in results.items()}
        is_wrong = {i: w * 2 >= n if seed_eval.wrong_if == "majority" and n > 1 else w > 0 for i, w in wrong.items()}
        summary[split] = {"total": len(results), "correct": sum(not w for w in is_wrong.values()),
                          "invalid": sum(not rs[0].valid for rs in results.values()),
                          "wrong_ids": [i for i, w in is_wrong.items() if w]}
        if n > 1:
            summary[split].update(samples=n, sampled_answers=n * len(results),
                                  sampled_correct=sum(r.correct for rs in results.values() for r in rs))
    atomic_write_json(it_dir / "scores.json", summary)
    return summary


def teacher_engine(teacher_path: Path, run: RunDir, it_dir: Path, config: RunConfig, runner: PhaseRunner) -> EngineSpec:
    teacher = config.teacher
    options = {**config.vllm.model_dump(), **config.teacher.loading(), **runner.plan.vllm_options("teacher")}
    if config.plan.mode == "split" and teacher.engine in ("vllm", "vllm-server"):
        server = runner.kept_teacher_server(teacher_path, options)  # started once, stopped when the loop ends
        return EngineSpec("openai", teacher_path, vllm=options, url=server.url, api_key=server.api_key,
                          served_model=server.served_model)
    return EngineSpec(teacher.engine, teacher_path, vllm=options, url=teacher.url,
                      api_key=os.environ.get(teacher.api_key_env, "none") if teacher.engine == "openai" else None,
                      served_model=teacher.served_model, server_log=run.path / "logs" / f"teacher-server-{it_dir.name}.log")


def augment(wrong: list[dict], seed: list[dict], task: Task, teacher_path: Path, it: int, it_dir: Path,
            run: RunDir, config: RunConfig, runner: PhaseRunner) -> list[dict]:
    """Candidate examples for the next training set, by the run's method, in a fixed order."""
    method, baselines = config.loop.method, config.baselines
    if method == "eda":
        return eda_candidates(seed, task, it, config)
    if method == "auggpt":
        return teacher_generate(seed, "paraphrase", [baselines.auggpt_per_example] * len(seed), seed, task, teacher_path, it, it_dir,
                                run, config, runner)
    if method == "llm2llm":
        counts = [config.teacher.per_wrong] * len(wrong)
    elif baselines.one_shot_total:  # a total (e.g. what an llm2llm run generated), spread evenly
        share, extra = divmod(baselines.one_shot_total, max(1, len(wrong)))
        counts = [share + (i < extra) for i in range(len(wrong))]
    else:
        counts = [baselines.one_shot_per_wrong or config.teacher.per_wrong * config.loop.iterations] * len(wrong)
    return teacher_generate(wrong, "similar", counts, seed, task, teacher_path, it, it_dir, run, config, runner)


def eda_candidates(seed: list[dict], task: Task, it: int, config: RunConfig) -> list[dict]:
    eda = EDA(load_wordnet(config.baselines.wordnet_dir), config.baselines.eda_alpha, config.baselines.eda_num_aug)
    candidates = []
    for ex in seed:
        rng = random.Random(f"{config.data.seed}/eda/{ex['id']}")
        for j, text in enumerate(eda.augment(ex["text"], rng)):
            example = {"id": f"eda{it}-{ex['id']}-{j}", "text": text, "label": ex["label"], "parent_id": ex["id"], "iteration": it}
            candidates.append({"key": f"eda:{ex['id']}:{j}", "example": example})
    return candidates


def teacher_generate(sources: list[dict], kind: str, counts: list[int], seed: list[dict], task: Task, teacher_path: Path, it: int,
                     it_dir: Path, run: RunDir, config: RunConfig, runner: PhaseRunner) -> list[dict]:
    """Ask the teacher for counts[i] new examples for sources[i], similar ones (kind "similar":
    LLM2LLM) or paraphrases ("paraphrase": AugGPT); return the parsed candidates in a fixed order."""
    teacher = config.teacher
    # The answer budget fits the number of examples one request asks for (a cut-off last one is dropped).
    sampling = teacher.sampling.model_copy(update={
        "stop": teacher.sampling.stop or task.teacher_stop(teacher.style),
        "max_new_tokens": teacher.sampling.max_new_tokens or task.teacher_token_budget(teacher.style, max(counts, default=1))})
    identity = fingerprint(teacher_path)
    tokenizer = load_tokenizer(teacher_path, config.teacher.trust_remote_code)
    requests = []
    count_of = {ex["id"]: count for ex, count in zip(sources, counts)}
    for ex, count in zip(sources, counts):
        if count == 0:
            continue
        for sample_index in range(count if teacher.style == "continuation" else 1):
            if kind == "paraphrase":
                prompt = task.teacher_paraphrase(ex, teacher.style, count)
            elif teacher.style == "continuation":
                rng = random.Random(f"{config.data.seed}/{it}/{ex['id']}/{sample_index}")
                same = [s for s in seed if s["id"] != ex["id"] and task.stratum(s) == task.stratum(ex)]
                prompt = task.teacher_continuation(ex, rng.sample(same, min(teacher.shots, len(same))))
            else:
                prompt = task.teacher_chat(ex, count)
            if teacher.style == "chat":
                prompt = render_chat(tokenizer, prompt)
            for draw in range(sampling.n):
                # The iteration is part of the sample index: asking again in a later iteration must
                # draw new samples, not replay the cached ones.
                key = request_key(identity, prompt, sampling.model_dump_json(exclude={"n"}), f"{it}.{sample_index}.{draw}")
                requests.append({"key": key, "parent_id": ex["id"], "sample": sample_index, "draw": draw, "prompt": prompt,
                                 "teacher": teacher.model, "teacher_fingerprint": identity})
    outputs, stats = generate_cached(teacher_engine(teacher_path, run, it_dir, config, runner), requests,
                                     it_dir / "teacher_outputs.jsonl", sampling, teacher.batch_size,
                                     f"generate {it_dir.name}", cache_path=config.cache_path(), runner=runner, role="teacher")
    tokens = {"prompt_tokens": sum(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests),
              "completion_tokens": sum(len(tokenizer(outputs[r["key"]], add_special_tokens=False)["input_ids"]) for r in requests)}
    atomic_write_json(it_dir / "teacher_stats.json", {**asdict(stats), **tokens})
    finish = {key: record.get("finish_reason") for key, record in RecordLog(it_dir / "teacher_outputs.jsonl").records.items()}
    candidates = []
    by_id = {ex["id"]: ex for ex in sources}
    for request in requests:
        parent = by_id[request["parent_id"]]
        parsed = task.parse_teacher(outputs[request["key"]], parent, teacher.style)
        # An answer the token limit cut off: its last example is unfinished, unless more were written than asked for.
        cut = finish.get(request["key"]) == "length" and len(parsed) <= count_of[parent["id"]]
        parsed = parsed[:count_of[parent["id"]]]
        if not parsed:
            candidates.append({"key": f"{request['key']}:0", "example": None, "truncated": cut})
        for j, example in enumerate(parsed):
            example = {"id": f"gen{it}-{request['key'][:12]}-{j}", **example, "parent_id": parent["id"],
                       "iteration": it, "teacher": teacher.model, "teacher_fingerprint": identity}
            candidates.append({"key": f"{request['key']}:{j}", "example": example, "truncated": cut and j == len(parsed) - 1})
    return candidates
