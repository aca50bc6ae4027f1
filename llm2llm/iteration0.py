"""Iteration 0 computed once: runs that would fine-tune and score the same plain student share it.

Iteration 0 of every method is plain fine-tuning on the seed examples, then scores on test,
validation and the seed examples. It depends only on the student, the seed examples, the training
recipe, the task's prompts and the evaluation settings, so two runs that agree on those (another
method, another K, another teacher option, on the same RNG seed) get the same iteration 0. The first
run to finish one publishes it to a store keyed by a hash of exactly those inputs
(<runs_dir>/iteration0-cache/<key>/); a later run copies it into its own iter_000 (hard links where the
file system allows) and its markers then skip training and evaluation. A comparison of N variants
costs one iteration 0 per seed.

Concurrent runs with one key queue on a lock file (flock) beside the entry, so the second waits for
the first and reuses its result instead of training too; publishing is a rename of a complete
folder, so a reader sees a whole entry or none, also where flock does not reach (a shared file
system without a lock manager: at worst both train). iter_000/shared.json says which happened.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from llm2llm.data import balance
from llm2llm.store import atomic_write_json, fsync_tree, read_json

log = logging.getLogger(__name__)

FORMAT = 1  # raise when what an entry holds, or how scores are computed, changes
# What an iteration 0 leaves in iter_000 (the training set, the seed, is written by every run itself).
# In the order they are copied: the phase markers (train_log.json, scores.json) last, so that a copy cut
# short (a full disk, a kill) leaves markers only for what is whole.
FILES = ("predictions.jsonl", "eval_stats.json", "train_log.json", "scores.json")
RECORD = "shared.json"


def iteration0_key(ctx) -> str:
    """A hash of everything iteration 0's numbers depend on (not the method, teacher or loop)."""
    config = ctx.config
    parts = {
        "format": FORMAT,
        "student": ctx.student.identity,
        "student_config": config.student.model_dump(mode="json", exclude={"model"}),
        "train": config.train.model_dump(
            mode="json",
            exclude={"tensorboard", "ddp_timeout", "checkpoint_minutes", "checkpoint_steps", "balance_labels"},
        ),
        "seed_eval": config.seed_eval.model_dump(mode="json"),
        "vllm": config.vllm.model_dump(
            mode="json", exclude={"start_timeout", "request_timeout", "max_retries", "concurrency"}
        ),
        "task": {"name": ctx.task.name, "type": ctx.task.type, "labels": ctx.task.labels, "spec": ctx.task.spec},
        "seed": ctx.seed,
        "test": ctx.test,
        "validation": ctx.validation,
        "training_processes": ctx.student.processes,
    }
    if config.train.balance_labels and len(balance(ctx.seed, ctx.task, config.train.seed)) != len(ctx.seed):
        parts["balanced"] = True  # a seed balanced already trains the same with the switch on or off
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(src, dst)


def _copy(src: Path, dst: Path) -> None:
    """iter_000's student folder, then its files, from src into dst (linked where possible). The student
    appears by one rename (its temporary name is one RunDir sweeps), the markers after it."""
    if (src / "student").is_dir() and not (dst / "student").exists():
        tmp = dst / ".student.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / "student", tmp, copy_function=_link_or_copy)
        os.rename(tmp, dst / "student")
    for name in FILES:
        if (src / name).exists():
            (dst / name).unlink(missing_ok=True)
            _link_or_copy(str(src / name), str(dst / name))


class Iteration0Store:
    """Published iterations 0, one folder per key, each whole or absent."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def entry(self, key: str) -> Path:
        return self.path / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "source.json").exists()

    @contextmanager
    def locked(self, key: str, run: str) -> Iterator[None]:
        """Hold the key's lock: one run computes a given iteration 0 at a time on a host."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path / f".{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("run %s: waiting for another run computing the same iteration 0 (%s)", run, key)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def copy_into(self, key: str, it_dir: Path) -> dict:
        _copy(self.entry(key), it_dir)
        return read_json(self.entry(key) / "source.json")

    def publish(self, key: str, it_dir: Path, run: str) -> bool:
        """Publish a run's finished iteration 0 (its student still on disk); False if one is there already."""
        if self.has(key) or not (it_dir / "student").is_dir():
            return False
        tmp = self.path / f".{key}.{os.getpid()}.tmp"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _copy(it_dir, tmp)
            atomic_write_json(tmp / "source.json", {"key": key, "run": run, "published": time.time()})
            fsync_tree(tmp)
            os.rename(tmp, self.entry(key))
        except OSError as e:  # published first by another process, or no room: the run goes on unshared
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.has(key):
                log.warning("iteration 0 not published to %s: %s", self.path, e)
            return False
        return True


@contextmanager
def shared_iteration0(ctx, it: int) -> Iterator[None]:
    """Around iteration 0's train and evaluate steps: copy a published iteration 0 in first (the phase
    markers then skip both), or publish this run's once it is scored. Other iterations: nothing."""
    config, it_dir = ctx.config, ctx.iteration_dir(it)
    if it != 0 or not config.loop.share_iteration0:
        yield
        return
    store, key = Iteration0Store(config.iteration0_cache_path()), iteration0_key(ctx)
    record = it_dir / RECORD
    done = (it_dir / "scores.json").exists()
    if done and record.exists():  # settled on an earlier attempt
        yield
        return
    with store.locked(key, config.run):
        started = (it_dir / "train_log.json").exists() or (it_dir / "student").exists()  # its own, kept
        if not done and not started and store.has(key):
            source = store.copy_into(key, it_dir)
            atomic_write_json(record, {"key": key, "reused": True, "source_run": source["run"]})
            log.info("iteration 0 reused from run %s (shared iteration 0 %s)", source["run"], key)
        yield
        if not record.exists():
            published = store.publish(key, it_dir, config.run)
            atomic_write_json(record, {"key": key, "reused": False, "published": published, "source_run": config.run})
