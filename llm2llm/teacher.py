"""Step 3 of the loop for the methods that ask a teacher (llm2llm, one-shot, auggpt): the prompts,
one cached request per prompt and sample, the teacher role's answers (roles.Teacher: where its
engine runs is its business), and the answers parsed into candidates."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict

from llm2llm.config import SamplingConfig
from llm2llm.context import RunContext
from llm2llm.engines import render_chat
from llm2llm.generation import request_key
from llm2llm.records import Candidate, Example
from llm2llm.store import RecordLog, atomic_write_json, read_jsonl


def teacher_sampling(teacher, task, most: int):
    """The teacher's sampling with the task's stop strings and an answer budget that fits the most
    examples one source is asked for (a cut-off last example is dropped)."""
    return teacher.sampling.model_copy(
        update={
            "stop": teacher.sampling.stop or task.teacher_stop(teacher.style),
            "max_new_tokens": teacher.sampling.max_new_tokens or task.teacher_token_budget(teacher.style, most),
        }
    )


def teacher_generate(
    ctx: RunContext, it: int, sources: list[Example], kind: str, counts: list[int]
) -> list[Candidate]:
    """Ask the teacher for counts[i] new examples for sources[i], similar ones (kind "similar":
    LLM2LLM) or paraphrases ("paraphrase": AugGPT); return the parsed candidates in a fixed order."""
    config, task, teacher, it_dir = ctx.config, ctx.task, ctx.config.teacher, ctx.iteration_dir(it)
    sampling = teacher_sampling(teacher, task, max(counts, default=1))
    identity, tokenizer = ctx.teacher.identity, ctx.teacher.tokenizer
    requests = []
    count_of = {ex["id"]: count for ex, count in zip(sources, counts)}
    answers = wrong_answers(ctx, it) if teacher.contrast and kind == "similar" else {}
    kept = kept_children(ctx, it) if teacher.diversity else {}
    for ex, count in zip(sources, counts):
        if count == 0:
            continue
        # continuation: one example per request; chat: one request for all of them, or, for a share
        # larger than per_wrong (teacher.allocate), requests of at most per_wrong each
        split = teacher.style == "chat" and kind == "similar" and teacher.allocate != "even"
        cap = teacher.per_wrong if split else count
        parts = (
            [count] * count if teacher.style == "continuation" else [min(cap, count - i) for i in range(0, count, cap)]
        )
        for sample_index, asked in enumerate(parts):
            if kind == "paraphrase":
                prompt = task.teacher_paraphrase(ex, teacher.style, count)
            elif teacher.style == "continuation":
                rng = random.Random(f"{config.data.seed}/{it}/{ex['id']}/{sample_index}")
                same = [s for s in ctx.seed if s["id"] != ex["id"] and task.stratum(s) == task.stratum(ex)]
                prompt = task.teacher_continuation(ex, rng.sample(same, min(teacher.shots, len(same))))
            else:
                prompt = task.teacher_chat(ex, asked)
                if kind == "similar":  # the options' notes (teacher.contrast, teacher.diversity)
                    prompt += task.teacher_notes(
                        ex, answers.get(ex["id"]), kept.get(ex["id"], []) if teacher.diversity else None
                    )
            if teacher.style == "chat":
                prompt = render_chat(tokenizer, prompt)
            for draw in range(sampling.n):
                # The iteration is part of the sample index: asking again in a later iteration must
                # draw new samples, not replay the cached ones.
                key = request_key(
                    identity, prompt, sampling.model_dump_json(exclude={"n"}), f"{it}.{sample_index}.{draw}"
                )
                requests.append(
                    {
                        "key": key,
                        "parent_id": ex["id"],
                        "sample": sample_index,
                        "draw": draw,
                        "asked": asked,
                        "prompt": prompt,
                        "teacher": teacher.model,
                        "teacher_fingerprint": identity,
                    }
                )
    outputs, stats = ctx.teacher.generate(
        it, requests, sampling, it_dir / "teacher_outputs.jsonl", f"generate {it_dir.name}"
    )
    tokens = {
        "prompt_tokens": sum(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests),
        "completion_tokens": sum(
            len(tokenizer(outputs[r["key"]], add_special_tokens=False)["input_ids"]) for r in requests
        ),
    }
    candidates = parse_candidates(ctx, it, requests, outputs, count_of, sources, identity)
    if teacher.label_check:
        checks = label_check(ctx, it, candidates)
        tokens = {name: tokens[name] + checks[name] for name in tokens} | {"label_check": checks}
    atomic_write_json(it_dir / "teacher_stats.json", {**asdict(stats), **tokens})
    return candidates


def parse_candidates(ctx, it, requests, outputs, count_of, sources, identity) -> list[Candidate]:
    """The teacher's answers parsed into candidate examples, in request order; an answer the token
    limit cut off marks its last example truncated."""
    teacher, task, it_dir = ctx.config.teacher, ctx.task, ctx.iteration_dir(it)
    finish = {
        key: record.get("finish_reason") for key, record in RecordLog(it_dir / "teacher_outputs.jsonl").records.items()
    }
    candidates = []
    by_id = {ex["id"]: ex for ex in sources}
    for request in requests:
        parent = by_id[request["parent_id"]]
        parsed = task.parse_teacher(outputs[request["key"]], parent, teacher.style)
        # An answer the token limit cut off: its last example is unfinished, unless more were written than asked for.
        asked = request.get("asked", count_of[parent["id"]])
        cut = finish.get(request["key"]) == "length" and len(parsed) <= asked
        parsed = parsed[:asked]
        if not parsed:
            candidates.append({"key": f"{request['key']}:0", "example": None, "truncated": cut})
        for j, example in enumerate(parsed):
            example = {
                "id": f"gen{it}-{request['key'][:12]}-{j}",
                **example,
                "parent_id": parent["id"],
                "iteration": it,
                "teacher": teacher.model,
                "teacher_fingerprint": identity,
            }
            candidates.append(
                {"key": f"{request['key']}:{j}", "example": example, "truncated": cut and j == len(parsed) - 1}
            )
    return candidates


def wrong_answers(ctx: RunContext, it: int) -> dict[str, str]:
    """For each seed example the student got wrong in iteration `it`'s evaluation, its most frequent
    wrong answer that is a valid answer (an invalid output gives nothing to contrast with)."""
    task, by_id = ctx.task, {ex["id"]: ex for ex in ctx.seed}
    tally: dict[str, Counter] = {}
    for record in RecordLog(ctx.iteration_dir(it) / "predictions.jsonl").records.values():
        if record.get("split") != "seed" or record["id"] not in by_id:
            continue
        score = task.score(record["output"], by_id[record["id"]])
        if score.prediction is not None and not score.correct:
            tally.setdefault(record["id"], Counter())[score.prediction] += 1
    # most frequent first; a tie goes to the answer that sorts first, so reruns ask the same
    return {i: min(c, key=lambda a: (-c[a], a)) for i, c in tally.items()}


def kept_children(ctx: RunContext, it: int) -> dict[str, list[dict]]:
    """The new examples kept in iterations before `it`, by the seed example they were written for."""
    children: dict[str, list[dict]] = {}
    for j in range(it):
        path = ctx.iteration_dir(j) / "filter_decisions.jsonl"
        if path.exists():
            for decision in read_jsonl(path):
                if decision["kept"]:
                    children.setdefault(decision["example"]["parent_id"], []).append(decision["example"])
    return children


def label_check(ctx: RunContext, it: int, candidates: list[Candidate]) -> dict:
    """The teacher answers each parsed candidate with the student's own prompt, greedily (answers in
    iter_NNN/label_checks.jsonl, cached like every teacher answer); each candidate gets
    label_check = {answer, agrees}. Returns the tokens it took."""
    task, teacher, it_dir = ctx.task, ctx.config.teacher, ctx.iteration_dir(it)
    identity, tokenizer = ctx.teacher.identity, ctx.teacher.tokenizer
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=task.max_answer_tokens(tokenizer))
    checked = [c for c in candidates if c["example"] is not None]
    requests = {}
    for c in checked:
        prompt = render_chat(tokenizer, task.prompt(c["example"]))
        key = request_key(identity, prompt, sampling.model_dump_json(), "label-check")
        requests[key] = {"key": key, "prompt": prompt, "teacher": teacher.model, "teacher_fingerprint": identity}
        c["check_key"] = key
    outputs, _ = ctx.teacher.generate(
        it, list(requests.values()), sampling, it_dir / "label_checks.jsonl", f"label check {it_dir.name}"
    )
    for c in checked:
        score = task.score(outputs[c.pop("check_key")], c["example"])
        c["label_check"] = {"answer": score.prediction, "agrees": score.correct}
    return {
        "prompt_tokens": sum(
            len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests.values()
        ),
        "completion_tokens": sum(len(tokenizer(outputs[k], add_special_tokens=False)["input_ids"]) for k in requests),
    }
