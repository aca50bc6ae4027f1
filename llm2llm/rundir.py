"""The run directory runs/<run>/: opening it (config pinned on first use, one process at a time)
and the fixed samples recorded in it. Layout: docs/run-directory.md."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from llm2llm.config import RunConfig, config_from_file, config_to_yaml
from llm2llm.errors import UserError
from llm2llm.private import folder_problem, private_folder
from llm2llm.store import RecordLog, atomic_write_json, atomic_write_text, read_json

LOCK_WAIT_SECONDS = 30
CLAIM_FILE = ".lock.json"
log = logging.getLogger(__name__)


def lease_seconds() -> float:
    """How long a claim on a run stays good without being renewed (its holder renews it every
    quarter of that). LLM2LLM_LOCK_LEASE_SECONDS, default 60: on a shared file system whose clocks
    or attribute caches lag, a longer lease."""
    return float(os.environ.get("LLM2LLM_LOCK_LEASE_SECONDS", "60"))


def this_host() -> str:
    """The name this process's claims carry (LLM2LLM_HOSTNAME, else the host name): two containers
    that share a host name on different nodes set it apart."""
    return os.environ.get("LLM2LLM_HOSTNAME") or socket.gethostname()


def check_folders(config: RunConfig) -> None:
    """Refuse, before anything is written, a folder the run would write into that is not this user's
    alone (llm2llm.private): the runs folder, the run's folder and the two caches, where they exist."""
    run_path = Path(config.runs_dir) / config.run
    checks = [
        (Path(config.runs_dir), "runs folder", False, True),
        (run_path, "run folder", False, False),
        (config.cache_path(), "generation cache", config.cache_group, False),
        (config.iteration0_cache_path(), "iteration-0 cache", False, False),
    ]
    for path, what, group, sticky_ok in checks:
        if path.is_dir() and (problem := folder_problem(path, what, group, sticky_ok)):
            raise UserError(problem)


class RunDir:
    """An open run directory: holds the run's lock and logs to its log.txt until closed (`with
    RunDir(...)`, or close()), so that one Python process can run several boosts one after another."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.path = private_folder(Path(config.runs_dir) / config.run, "run folder")
        self._lock = open(self.path / ".lock", "a")
        self._log = None
        self._renewing: threading.Event | None = None
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
            # runs_dir is where the folder was reached from, not what it holds: runs/boost and
            # /abs/path/runs/boost open the same run, and so does a run folder moved elsewhere
            stored = config_from_file(config_path).model_dump(mode="json", exclude={"runs_dir"})
            wanted = config.model_dump(mode="json", exclude={"runs_dir"})
            if stored != wanted:
                key = first_difference(stored, wanted)
                raise UserError(
                    f"run {self.path} already exists with a different config ({key}); "
                    f"rerun with the same options to resume, or pick another RUN / delete the folder"
                )
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
        if self._renewing is not None:  # our claim ends with us
            self._renewing.set()
            self._renewer.join(timeout=10)  # not renewing while we remove it
            self._renewing = None
            claim = self._read_claim()
            if claim and claim.get("host") == this_host() and claim.get("pid") == os.getpid():
                (self.path / CLAIM_FILE).unlink(missing_ok=True)
        self._lock.close()  # closing the file releases its flock

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire_lock(self) -> None:
        """One process per run. On one host the flock decides (the training launcher holds it too,
        so a rerun right after a kill -9 waits, briefly, for the last phase processes of the killed
        run to exit). flock does not reach every process on a shared file system (NFS without a
        lock manager, Lustre mounted with localflock), so the holder also keeps a claim in
        .lock.json (host, pid, Slurm job, renewed every quarter lease): a claim from another host
        renewed within the lease is a live run there, and a requeued job on another node waits
        for a dying holder's claim to lapse (one lease) before it takes the run over."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        remote_deadline = time.monotonic() + 1.5 * lease_seconds()  # a dying holder's claim lapses within one
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process of this host (or one the file system's locks reach)
                if time.monotonic() > deadline:
                    raise UserError(
                        f"run {self.path} is in use by another llm2llm process; wait for it or pick another RUN"
                    ) from None
                time.sleep(0.2)
                continue
            holder = self._live_claim_elsewhere()
            if holder is None:
                self._remove_leftovers()
                self._claim()
                return
            fcntl.flock(self._lock, fcntl.LOCK_UN)  # a live run on another host: wait for its claim to lapse
            if time.monotonic() > remote_deadline:
                job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
                raise UserError(
                    f"run {self.path} is in use on host {holder['host']} (pid {holder['pid']}{job}; its claim in "
                    f"{CLAIM_FILE} was renewed {time.time() - holder['renewed']:.0f} s ago); wait for that run to "
                    f"stop (a claim not renewed for {lease_seconds():.0f} s is taken over) or pick another RUN"
                )
            time.sleep(0.5)

    def _read_claim(self) -> dict | None:
        try:
            claim = json.loads((self.path / CLAIM_FILE).read_text())
        except (OSError, ValueError):
            return None
        return claim if isinstance(claim, dict) else None

    def _live_claim_elsewhere(self) -> dict | None:
        """The claim of a run alive on another host, or None. A claim of this host whose flock we
        now hold is a dead process's; a claim not renewed within the lease, a dead host's."""
        claim = self._read_claim()
        if not claim or claim.get("host") == this_host():
            return None
        if time.time() - float(claim.get("renewed", 0)) > lease_seconds():
            return None
        return claim

    def _claim(self) -> None:
        """Write our claim and renew it from a thread until close()."""
        claim = {
            "host": this_host(),
            "pid": os.getpid(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "started": time.time(),
        }
        stop = self._renewing = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_seconds() / 4):
                try:
                    atomic_write_json(self.path / CLAIM_FILE, {**claim, "renewed": time.time()})
                except OSError as e:  # a full or vanished file system: the run's own writes will say so
                    log.warning("could not renew the claim on %s: %s", self.path, e)

        atomic_write_json(self.path / CLAIM_FILE, {**claim, "renewed": time.time()})
        self._renewer = threading.Thread(target=renew, daemon=True, name="run-claim")
        self._renewer.start()

    def pin_models(self, models: dict[str, dict]) -> None:
        """models.json: each role's name, folder and fingerprint, recorded on first use. A rerun whose
        model folder now holds something else is refused: its answers would not match the cached ones."""
        path = self.path / "models.json"
        if not path.exists():
            atomic_write_json(path, models)
            return
        stored = read_json(path)
        for role, record in models.items():
            before = stored.get(role, {}).get("fingerprint")
            if before is not None and before != record["fingerprint"]:
                raise UserError(
                    f"run {self.path}: the {role} model {record['path']} has changed since the run started "
                    f"(fingerprint {before} -> {record['fingerprint']}); restore that folder, or start a new RUN to "
                    "use it"
                )

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
