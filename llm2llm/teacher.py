"""Step 3 of the loop for the methods that ask a teacher (llm2llm, one-shot, auggpt): the prompts,
one cached request per prompt and sample, the teacher role's answers (roles.Teacher: where its
engine runs is its business), and the answers parsed into candidates."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict
from itertools import zip_longest

from llm2llm.config import SamplingConfig
from llm2llm.context import RunContext
from llm2llm.engines import cut_at_stop, render_chat
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


def teacher_generate(ctx: RunContext, it: int, asks: list[tuple[Example, str, int]]) -> list[Candidate]:
    """Ask the teacher, for each (source, kind, count), for `count` new examples: similar ones (kind
    "similar": LLM2LLM) or paraphrases ("paraphrase": AugGPT); return the parsed candidates in a fixed order."""
    teacher, it_dir = ctx.config.teacher, ctx.iteration_dir(it)
    sampling = teacher_sampling(teacher, ctx.task, max((count for _, _, count in asks), default=1))
    requests = teacher_requests(ctx, it, asks, sampling)
    # The answer ends at the list item after the last one asked for (the most any request asks for: one
    # sampling serves them all). The stop is not in the request keys (made from `sampling`), so each request
    # keeps its seed and draws what it drew before the stop existed, cut there; the tokens are counted on
    # the cut text, so an answer cached uncut counts as a fresh one.
    stop = ctx.task.teacher_list_stop(teacher.style, max((r["asked"] for r in requests), default=1))
    outputs, stats = ctx.teacher.generate(
        it,
        requests,
        sampling.model_copy(update={"stop": [*sampling.stop, *stop]}),
        it_dir / "teacher_outputs.jsonl",
        f"generate {it_dir.name}",
    )
    tokens = count_tokens(
        ctx.teacher.tokenizer, requests, {key: cut_at_stop(text, stop) for key, text in outputs.items()}
    )
    candidates = parse_candidates(ctx, it, requests, outputs, [ex for ex, _, _ in asks])
    if teacher.label_check:
        checks = label_check(ctx, it, candidates)
        tokens = {name: tokens[name] + checks[name] for name in tokens} | {"label_check": checks}
    atomic_write_json(it_dir / "teacher_stats.json", {**asdict(stats), **tokens})
    return candidates


def teacher_requests(
    ctx: RunContext, it: int, asks: list[tuple[Example, str, int]], sampling: SamplingConfig
) -> list[dict]:
    """One request per prompt and draw, keyed by the teacher, the prompt, the sampling and (iteration,
    sample, draw): asking again in a later iteration draws new samples instead of replaying cached ones."""
    teacher, identity = ctx.config.teacher, ctx.teacher.identity
    chat = teacher.style == "chat"  # the options add to the paper's chat request only
    similar = [ex for ex, kind, _ in asks if kind == "similar"]
    notes = option_notes(ctx, it, similar) if chat and similar else {}
    requests = []
    for ex, kind, count in asks:
        options = kind == "similar" and chat
        shown = teacher.show_seed if options else 0
        context = ctx.task.seed_context(seed_shown(ctx, ex, shown)) if shown else ""
        for sample_index, asked in enumerate(request_sizes(teacher, kind, count)):
            prompt = (
                context
                + teacher_prompt(ctx, it, ex, kind, asked, sample_index)
                + (notes.get(ex["id"], "") if options else "")
            )
            if teacher.style == "chat":
                prompt = render_chat(ctx.teacher.tokenizer, prompt)
            for draw in range(sampling.n):
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
    return requests


def request_sizes(teacher, kind: str, count: int) -> list[int]:
    """How many examples each request for one source asks for: continuation, one per request (count
    requests); chat, all in one, or, for a share larger than per_wrong (teacher.allocate), at most
    per_wrong each."""
    if teacher.style == "continuation":
        return [count] * count
    cap = teacher.per_wrong if kind == "similar" and teacher.allocate != "even" else count
    return [min(cap, count - i) for i in range(0, count, cap)] if count else []


def teacher_prompt(ctx: RunContext, it: int, ex: Example, kind: str, asked: int, sample_index: int) -> str:
    """The request's text before the chat template: a paraphrase request, a continuation (same-label
    seed examples drawn per request), or the paper's chat request for `asked` similar examples."""
    config, task, teacher = ctx.config, ctx.task, ctx.config.teacher
    if kind == "paraphrase":
        return task.teacher_paraphrase(ex, teacher.style, asked)
    if teacher.style == "continuation":
        rng = random.Random(f"{config.data.rng_seed}/{it}/{ex['id']}/{sample_index}")
        same = [s for s in ctx.seed if s["id"] != ex["id"] and task.stratum(s) == task.stratum(ex)]
        return task.teacher_continuation(ex, rng.sample(same, min(teacher.shots, len(same))))
    return task.teacher_chat(ex, asked)


def seed_shown(ctx: RunContext, wrong: Example, most: int) -> list[Example]:
    """The seed examples teacher.show_seed lists before a request about `wrong`: the others of its
    stratum (label) first, then one of each other stratum in turn, in seed order, at most `most`."""
    strata: dict = {}
    for ex in ctx.seed:
        if ex["id"] != wrong["id"]:
            strata.setdefault(ctx.task.stratum(ex), []).append(ex)
    own = strata.pop(ctx.task.stratum(wrong), [])
    rounds = [ex for group in zip_longest(*strata.values()) for ex in group if ex is not None]
    return (own + rounds)[:most]


def option_notes(ctx: RunContext, it: int, sources: list[Example]) -> dict[str, str]:
    """What teacher.contrast and teacher.diversity add to each source's chat request ("" when off)."""
    teacher, task = ctx.config.teacher, ctx.task
    answers = wrong_answers(ctx, it) if teacher.contrast else {}
    kept = kept_children(ctx, it) if teacher.diversity else {}
    return {
        ex["id"]: task.teacher_notes(ex, answers.get(ex["id"]), kept.get(ex["id"], []) if teacher.diversity else None)
        for ex in sources
    }


def count_tokens(tokenizer, requests: list[dict], outputs: dict[str, str]) -> dict[str, int]:
    """The teacher's prompt and output tokens over the requests (the budget methods are compared at)."""
    return {
        "prompt_tokens": sum(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests),
        "completion_tokens": sum(
            len(tokenizer(outputs[r["key"]], add_special_tokens=False)["input_ids"]) for r in requests
        ),
    }


def parse_candidates(
    ctx: RunContext, it: int, requests: list[dict], outputs: dict[str, str], sources: list[Example]
) -> list[Candidate]:
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
        cut = finish.get(request["key"]) == "length" and len(parsed) <= request["asked"]
        parsed = parsed[: request["asked"]]
        if not parsed:
            candidates.append({"key": f"{request['key']}:0", "example": None, "truncated": cut})
        for j, example in enumerate(parsed):
            example = {
                "id": f"gen{it}-{request['key'][:12]}-{j}",
                **example,
                "parent_id": parent["id"],
                "iteration": it,
                "teacher": teacher.model,
                "teacher_fingerprint": ctx.teacher.identity,
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
    return count_tokens(tokenizer, list(requests.values()), outputs)
