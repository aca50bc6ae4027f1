"""The run directory runs/<run>/: opening it (config pinned on first use, one process at a time)
and the fixed samples recorded in it. Layout: docs/run-directory.md."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from llm2llm.claim import CLAIM_FILE, Claim, holder_text, lease_seconds, this_host
from llm2llm.config import RunConfig, config_from_file, config_to_yaml
from llm2llm.errors import UserError
from llm2llm.private import folder_problem, private_folder
from llm2llm.store import RecordLog, atomic_write_json, atomic_write_text, read_json

LOCK_WAIT_SECONDS = 30
# Settings a rerun may change without changing what the run computes.
# What a rerun may change without changing what the run computes: where it is, how often training
# checkpoints, and where phases run (split or sequential sample alike: engines.SamplingConfig).
RERUN_MAY_CHANGE = {
    "runs_dir": True,
    "train": {"checkpoint_minutes": True, "checkpoint_steps": True},
    "plan": {"mode": True},
    "teacher": {"sleep": True},  # where the teacher waits between phases, not what it answers
}
log = logging.getLogger(__name__)


def flock_used() -> bool:
    """LLM2LLM_LOCK=claim: the claim alone decides (a file system whose flock fails or reaches only
    this host, e.g. NFS without a lock manager, where flock may even say ENOLCK)."""
    return os.environ.get("LLM2LLM_LOCK", "flock") != "claim"


def check_folders(config: RunConfig) -> None:
    """Refuse, before anything is written, a folder the run would write into that is not this user's
    alone (llm2llm.private): the runs folder, the run's folder and the two caches, where they exist."""
    run_path = Path(config.runs_dir) / config.run
    checks = [  # (folder, its name, shared with its group, world-writable with the sticky bit allowed)
        # the runs folder may be a team's (group-writable): each run folder in it is private all the same
        (Path(config.runs_dir), "runs folder", True, True),
        (run_path, "run folder", False, False),
        (config.cache_path(), "generation cache", config.cache_group, False),
        (config.iteration0_cache_path(), "iteration-0 cache", False, False),
    ]
    for path, what, group, sticky_ok in checks:
        if path.is_dir() and (problem := folder_problem(path, what, group, sticky_ok)):
            raise UserError(problem)


def check_data(config: RunConfig, fingerprints: dict[str, str]) -> None:
    """Refuse a rerun over data other than the run was started with (its data.json): its earlier
    predictions would be scored against the new labels, and its pinned seed ids may be gone."""
    path = Path(config.runs_dir) / config.run / "data.json"
    if not path.exists():
        return
    stored = read_json(path)
    changed = [part for part, value in fingerprints.items() if stored.get(part, value) != value]
    if changed:
        raise UserError(
            f"run {path.parent}: the {' and '.join(changed)} of {config.data.dataset} changed since the run started "
            f"(data.json); restore the files the run was started with, or start a new RUN for the new data"
        )


def check_config(config: RunConfig, path: Path | None = None) -> None:
    """Refuse a rerun with a config that would compute something else than the run's config.yaml.
    runs_dir is where the folder was reached from, not what it holds (runs/boost and
    /abs/path/runs/boost open the same run, and so does a moved run folder); RERUN_MAY_CHANGE lists
    the rest a rerun may change (checkpoint frequency after a preemption, where phases run)."""
    path = path or Path(config.runs_dir) / config.run
    if not (path / "config.yaml").exists():
        return
    stored = config_from_file(path / "config.yaml").model_dump(mode="json", exclude=RERUN_MAY_CHANGE)
    wanted = config.model_dump(mode="json", exclude=RERUN_MAY_CHANGE)
    if stored != wanted:
        raise UserError(
            f"run {path} already exists with a different config ({first_difference(stored, wanted)}); "
            f"rerun with the same options to resume, or pick another RUN / delete the folder"
        )


def check_models(config: RunConfig, models: dict[str, dict]) -> None:
    """Refuse a rerun whose model folder now holds something else than when the run started (its
    models.json): its answers would not match the cached ones."""
    path = Path(config.runs_dir) / config.run / "models.json"
    stored = read_json(path) if path.exists() else {}
    for role, record in models.items():
        before = stored.get(role, {}).get("fingerprint")
        if before is not None and before != record["fingerprint"]:
            raise UserError(
                f"run {path.parent}: the {role} model {record['path']} has changed since the run started "
                f"(fingerprint {before} -> {record['fingerprint']}); restore that folder, or start a new RUN to use it"
            )


# A phase of iteration `it` is done when its marker exists (paths in runs/<run>/): a rerun reads the
# phase's result from it instead of running the phase (PhaseRunner.phase). The report has none: it is
# redone each time.
PHASE_MARKERS = {
    "train": "iter_{it:03d}/train_log.json",  # the student folder beside it may be pruned (loop.prune_students)
    "evaluate": "iter_{it:03d}/scores.json",
    "generate": "iter_{it:03d}/candidates.jsonl",
    "filter": "iter_{it:03d}/filter_decisions.jsonl",
    "merge": "iter_{next:03d}/train.jsonl",  # the next iteration's training set
    "report": None,
}


class RunDir:
    """An open run directory: holds the run's lock and logs to its log.txt until closed (`with
    RunDir(...)`, or close()), so that one Python process can run several boosts one after another."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.path = private_folder(Path(config.runs_dir) / config.run, "run folder")
        self._lock = open(self.path / ".lock", "a")
        self._log = None
        self.claim = Claim(self.path)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        config = self.config
        self._acquire_lock()  # also sweeps a killed process's temporary files, before our claim writes its own
        config_path = self.path / "config.yaml"
        if config_path.exists():
            check_config(config, self.path)  # again under the lock: the pre-flight's may be stale
        else:
            atomic_write_text(config_path, config_to_yaml(config))
        self.timings = RecordLog(self.path / "timings.jsonl")
        self._log = logging.FileHandler(self.path / "log.txt")
        self._log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._log)

    def close(self) -> None:
        """Stop logging to log.txt and release the lock."""
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            self._log.close()
            self._log = None
        self.claim.release()  # our claim ends with us
        self._lock.close()  # closing the file releases its flock

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire_lock(self) -> None:
        """One process per run. On one host the flock decides (the training launcher holds it too,
        so a rerun right after a kill -9 waits, briefly, for the last phase processes of the killed
        run to exit). Across hosts the claim decides (llm2llm/claim.py): a claim whose holder's
        heartbeat changes is a live run elsewhere; one that has not changed for a lease, watched
        from here, is a dead or stopped holder's, and is taken over."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        remote_deadline = time.monotonic() + 1.5 * lease_seconds()  # a dying holder's claim lapses within one
        seen, changed_at = None, time.monotonic()
        while True:
            if flock_used():
                try:
                    fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process of this host (or one the file system's locks reach)
                    if time.monotonic() > deadline:
                        raise UserError(
                            f"run {self.path} is in use by another llm2llm process; wait for it or pick another RUN"
                        ) from None
                    time.sleep(0.2)
                    continue
            if self._remove_leftovers_and_claim():
                return
            claim = self.claim.current() or {}
            state = self.claim.state(claim)
            if state != seen:
                seen, changed_at = state, time.monotonic()
            if time.monotonic() - changed_at > lease_seconds() or self._dead_here(claim):
                self._remove_leftovers()  # the dead holder's temporary files, before our claim writes its own
                if self.claim.take_over(claim):
                    log.info("took over the run from %s, whose claim had lapsed", holder_text(claim))
                    return
            if flock_used():
                fcntl.flock(self._lock, fcntl.LOCK_UN)  # a live run on another host: wait for its claim to lapse
            if time.monotonic() > remote_deadline:
                raise UserError(
                    f"run {self.path} is in use on {holder_text(claim)}; its claim in {CLAIM_FILE} changed "
                    f"{time.monotonic() - changed_at:.0f} s ago as seen from here; wait for that run to stop (a "
                    f"claim unchanged for {lease_seconds():.0f} s is taken over) or pick another RUN"
                )
            time.sleep(0.5)

    def _remove_leftovers_and_claim(self) -> bool:
        """Where nobody claims the run: sweep a killed process's temporary files, then create our claim."""
        if self.claim.current() is not None:
            return False
        self._remove_leftovers()
        return self.claim.create()

    def _dead_here(self, claim: dict) -> bool:
        """A claim of this host whose holder is gone: with flock, we now hold the lock it held; without,
        its pid is no longer alive. Taken over at once, without waiting for the lease."""
        if claim.get("host") != this_host():
            return False
        if flock_used():
            return True
        try:
            os.kill(int(claim.get("pid", 0)), 0)
        except (ProcessLookupError, ValueError):
            return True
        except PermissionError:  # alive, another user's
            return False
        return int(claim.get("pid", 0)) == 0

    def pin_data(self, fingerprints: dict[str, str]) -> None:
        """data.json: a hash of each split and of the task spec, recorded on first use (check_data refuses a
        rerun over other data before the run is opened)."""
        if not (self.path / "data.json").exists():
            atomic_write_json(self.path / "data.json", fingerprints)

    def pin_models(self, models: dict[str, dict]) -> None:
        """models.json: each role's name, folder and fingerprint, recorded on first use. A rerun whose
        model folder now holds something else is refused: its answers would not match the cached ones."""
        path = self.path / "models.json"
        if not path.exists():
            atomic_write_json(path, models)
        else:
            check_models(self.config, models)

    @property
    def lock_fd(self) -> int:
        return self._lock.fileno()

    def _remove_leftovers(self) -> None:
        """Temporary files and folders of a killed process (store.py names them .<name>...tmp)."""
        for path in sorted(self.path.rglob(".*.tmp"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def iteration(self, number: int) -> Path:
        path = self.path / f"iter_{number:03d}"
        path.mkdir(exist_ok=True)
        return path

    def fixed_ids(self, name: str, choose) -> list[str]:
        """Ids chosen once and recorded (seed_ids.json, test_ids.json); reruns reuse them."""
        path = self.path / name
        if path.exists():
            return read_json(path)
        ids = choose()
        atomic_write_json(path, ids)
        return ids

    def marker(self, iteration: int, name: str) -> Path | None:
        """The file whose existence says phase `name` of `iteration` is done (None: redone each time)."""
        pattern = PHASE_MARKERS[name]
        return self.path / pattern.format(it=iteration, next=iteration + 1) if pattern else None

    @contextmanager
    def phase(self, iteration: int, name: str):
        """Times a phase; the first completed attempt's time is recorded."""
        start = time.monotonic()
        yield
        key = f"{iteration}/{name}"
        if key not in self.timings:
            self.timings.append(
                [{"key": key, "iteration": iteration, "phase": name, "seconds": round(time.monotonic() - start, 2)}]
            )

    def phase_seconds(self, iteration: int) -> dict[str, float]:
        return {r["phase"]: r["seconds"] for r in self.timings.records.values() if r["iteration"] == iteration}


def first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {json.dumps(a)} in the run, {json.dumps(b)} now"
