"""Answering a list of generation requests, resumably and without asking twice.

Each request is {key, prompt, ...}; one with a `target` asks for that answer's log-probability
instead (the engine's `score`; the output is the number as text). An answer is looked up, in
order, in the run's own record log (iter_NNN/*.jsonl), then in the shared content-addressed
cache (teacher requests only), and only then asked of an engine, which runs in the phase's own
child process. Every batch the engine answers is written to the cache and the record log before
the next batch starts, so a kill -9 loses at most the batch in flight; when a teacher server fails
for good (TeacherError), the answers of the batch it did send are stored before the error goes up.

Batches are cut from the full, ordered request list and every request carries its own seed
derived from its key, so a rerun after a crash regenerates exactly the missing batches with the
same seeds (the transformers engine seeds each batch with its first request's seed).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from llm2llm.config import SamplingConfig
from llm2llm.engines import EngineSpec, generate_each, open_engine
from llm2llm.errors import TeacherError
from llm2llm.gencache import GenerationCache, writer
from llm2llm.runtime.phases import run_in_child
from llm2llm.store import RecordLog

log = logging.getLogger(__name__)


def request_key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def request_seed(sampling: SamplingConfig, key: str) -> int:
    return int(request_key(sampling.seed, key), 16) % (2**31)


@dataclass
class GenerationStats:
    requests: int = 0
    from_run: int = 0  # already in the run's record log
    from_cache: int = 0  # answered by the shared cache
    generated: int = 0  # answered by the engine in this call
    engine_seconds: float = 0.0  # the phase process, start to end
    engine_start_seconds: float = 0.0  # of which: spawning the process and loading the engine
    generate_seconds: float = 0.0  # of which: generating and storing


def _generate_batches(
    spec: EngineSpec,
    batches: list[tuple[SamplingConfig, list[dict]]],
    log_path: Path,
    cache_path: Path | None,
    desc: str,
    spawned_at: float,
) -> dict:
    """Runs in the phase's child process: open the engine, answer the batches (each with its own
    sampling), store each."""
    records = RecordLog(log_path)
    cache = GenerationCache(cache_path, writer(spec)) if cache_path else None

    cache_error = None

    def store(done: list[dict]) -> None:
        nonlocal cache, cache_error
        records.append(done)  # the run's own record first: the cache is a convenience
        if cache is not None and done:
            try:
                cache.put_many(done)
            except OSError as e:  # a cache folder we may not write, a full quota: this phase goes on without it
                cache_error, cache = f"{type(e).__name__}: {e}", None

    try:
        largest = max((batch for _, batch in batches), key=len, default=[])
        budget = max(sampling.max_new_tokens or 0 for sampling, _ in batches)
        with open_engine(spec, ([r["prompt"] for r in largest], budget)) as engine:
            ready = time.time()
            for sampling, batch in tqdm(batches, desc=desc, unit="batch"):
                if hasattr(engine, "generate_each"):  # a seed per request: a batch's missing part is enough
                    batch = [r for r in batch if r["key"] not in records]
                if "target" in batch[0]:  # a request to score a given answer: its log-probability is the output
                    scores = engine.score([r["prompt"] for r in batch], [r["target"] for r in batch])
                    store([{**r, "output": repr(v), "finish_reason": "score"} for r, v in zip(batch, scores)])
                    continue
                done = []
                try:
                    for i, completion in generate_each(
                        engine,
                        [r["prompt"] for r in batch],
                        sampling,
                        [request_seed(sampling, r["key"]) for r in batch],
                    ):
                        done.append({**batch[i], "output": completion.text, "finish_reason": completion.finish_reason})
                finally:  # a teacher that fails mid-batch: what it did answer is kept
                    store(done)
            finished = time.time()
    except TeacherError as e:
        stored = sum(r["key"] in records for _, b in batches for r in b)
        raise TeacherError(
            f"{desc}: {e}. {stored} of {sum(len(b) for _, b in batches)} answers of this phase are stored in "
            f"{log_path}; fix the server and rerun the same command to ask only for the rest"
        ) from None
    finally:
        if cache is not None:
            cache.close()
    return {
        "engine_start_seconds": round(ready - spawned_at, 2),
        "generate_seconds": round(finished - ready, 2),
        "cache_error": cache_error,
    }


def _batches(
    requests: list[dict], sampling: SamplingConfig | dict[str, SamplingConfig], batch_size: int
) -> list[tuple[SamplingConfig, list[dict]]]:
    """The ordered requests cut into batches of one sampling each (a run of one split at a time)."""
    if isinstance(sampling, SamplingConfig):
        return [(sampling, requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]
    batches: list[tuple[SamplingConfig, list[dict]]] = []
    for request in requests:
        group = sampling[request["split"]]
        if not batches or batches[-1][0] is not group or len(batches[-1][1]) == batch_size:
            batches.append((group, []))
        batches[-1][1].append(request)
    return batches


def _from_cache(missing: list[dict], records: RecordLog, cache_path: Path, desc: str) -> int:
    """The answers the shared cache holds for requests the run has not stored, copied into the run's
    record log; returns how many."""
    if not missing:
        return 0
    cache = GenerationCache(cache_path)
    hits = cache.get_many([r["key"] for r in missing])
    cache.close()
    if cache.rejected:
        log.warning(
            "%s: %d entries of the generation cache %s failed verification (written with another key, "
            "altered, or from before entries were signed); asked again",
            desc,
            cache.rejected,
            cache.path,
        )
    records.append(
        {**r, "output": hits[r["key"]][0], "finish_reason": hits[r["key"]][1]} for r in missing if r["key"] in hits
    )
    return len(hits)


def generate_cached(
    spec: EngineSpec,
    requests: list[dict],
    log_path: Path,
    sampling: SamplingConfig | dict[str, SamplingConfig],
    batch_size: int,
    desc: str,
    cache_path: Path | None = None,
    run: Callable = run_in_child,
) -> tuple[dict[str, str], GenerationStats]:
    """Answer every request; returns {key: output} and where the answers came from (each stored
    record also has the engine's finish_reason). `sampling` is one SamplingConfig, or one per
    request["split"] (e.g. greedy test answers and sampled seed answers from one engine start).
    The engine runs in a phase process started by run(desc, fn, *args): a plain child process, or
    (the roles' way, PhaseRunner.on) one on the phase's devices with its log and release check."""
    records = RecordLog(log_path)
    stats = GenerationStats(requests=len(requests))
    stats.from_run = sum(r["key"] in records for r in requests)
    if cache_path is not None:
        stats.from_cache = _from_cache([r for r in requests if r["key"] not in records], records, cache_path, desc)
    todo = [(s, b) for s, b in _batches(requests, sampling, batch_size) if any(r["key"] not in records for r in b)]
    if todo:
        start = time.monotonic()
        args = (_generate_batches, spec, todo, log_path, cache_path, desc, time.time())
        timing = run(desc, *args)
        stats.engine_start_seconds, stats.generate_seconds = timing["engine_start_seconds"], timing["generate_seconds"]
        if timing["cache_error"]:
            log.warning(
                "%s: the generation cache %s took no more answers after %s; they are in %s",
                desc,
                cache_path,
                timing["cache_error"],
                log_path,
            )
        stats.engine_seconds = round(time.monotonic() - start, 2)
        records = RecordLog(log_path)
        stats.generated = stats.requests - stats.from_run - stats.from_cache
    log.info(
        "%s: %d requests: %d from the run, %d from the cache, %d generated (%s engine)",
        desc,
        stats.requests,
        stats.from_run,
        stats.from_cache,
        stats.generated,
        spec.kind,
    )
    return {r["key"]: records.records[r["key"]]["output"] for r in requests}, stats
