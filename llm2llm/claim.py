"""One holder per run across hosts: the claim in runs/<run>/.lock.json.

flock does not reach every process on a shared file system (NFS without a lock manager, Lustre
mounted with localflock), so the process that holds a run also keeps a claim there:

- `.lock.json` names the holder ({nonce, host, pid, slurm_job, started}). It is created with
  link(2) from a file written whole: the name is created or the call fails because it exists,
  atomically on a local disk and on NFS or Lustre alike, so two processes never both create it.
- The holder proves it is alive in a heartbeat file of its own (`.lock-<nonce>.json`, a counter
  rewritten every quarter lease); it never rewrites `.lock.json`, so a holder that comes back
  after being stopped cannot overwrite a claim that was taken over meanwhile.
- Another process judges a claim lapsed on its own monotonic clock: when neither the claim nor its
  heartbeat has changed for a lease (LLM2LLM_LOCK_LEASE_SECONDS, default 60) while it watched.
  Wall clocks of different hosts are never compared.
- Taking over a lapsed claim is won by one process only: it must first create the marker
  `.lock-taken-<nonce of the lapsed claim>` (link(2) again), then finds the lapsed claim still in
  place and replaces it.
- The holder checks before each phase (and its renewer every quarter lease) that the claim is
  still its own; a holder that finds it taken over stops with one line instead of writing on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.store import atomic_write_json

CLAIM_FILE = ".lock.json"
log = logging.getLogger(__name__)


def lease_seconds() -> float:
    """How long a claim stays good without a heartbeat (its holder beats every quarter of that).
    LLM2LLM_LOCK_LEASE_SECONDS, default 60: on a shared file system whose attribute caches lag, a longer lease."""
    return float(os.environ.get("LLM2LLM_LOCK_LEASE_SECONDS", "60"))


def this_host() -> str:
    """The name this process's claims carry (LLM2LLM_HOSTNAME, else the host name): two containers
    that share a host name on different nodes set it apart."""
    return os.environ.get("LLM2LLM_HOSTNAME") or socket.gethostname()


def _read(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def holder_text(claim: dict) -> str:
    job = f", Slurm job {claim['slurm_job']}" if claim.get("slurm_job") else ""
    return f"host {claim.get('host')} (pid {claim.get('pid')}{job})"


class Claim:
    """This process's claim on one run folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / CLAIM_FILE
        self.nonce = uuid.uuid4().hex
        self.record = {
            "nonce": self.nonce,
            "host": this_host(),
            "pid": os.getpid(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "started": time.time(),
        }
        self.held = False
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # --- what is on disk
    def current(self) -> dict | None:
        """The claim in the folder now, or None."""
        return _read(self.path)

    def state(self, claim: dict) -> tuple[str, int | None]:
        """What changes while a claim's holder is alive: the claim itself, then its heartbeat."""
        beat = _read(self.folder / f".lock-{claim.get('nonce')}.json") if claim.get("nonce") else None
        return json.dumps(claim, sort_keys=True), (beat or {}).get("count")

    def _staged(self) -> Path:
        """Our claim written whole under a temporary name (swept as a leftover if we die here)."""
        tmp = self.folder / f".lock.{self.nonce}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(self.record))
        return tmp

    # --- taking it
    def create(self) -> bool:
        """Claim a run nobody claims: True if the claim was created by us, False if one exists."""
        tmp = self._staged()
        try:
            os.link(tmp, self.path)
        except (FileExistsError, FileNotFoundError):  # claimed first; or our staged file swept by another opener
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self._hold()
        return True

    def take_over(self, lapsed: dict) -> bool:
        """Replace a lapsed claim: True if we won it. Of the processes that judge the same claim lapsed,
        only the one that creates its marker may replace it, and only if it is still the one in place."""
        marker = self.folder / f".lock-taken-{lapsed.get('nonce') or 'unnamed'}"
        tmp = self._staged()
        try:
            os.link(tmp, marker)
        except (FileExistsError, FileNotFoundError):  # another process is taking it over (and swept our file)
            tmp.unlink(missing_ok=True)
            return False
        try:
            if self.current() != lapsed:  # it was released or replaced meanwhile: start over
                return False
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
        if lapsed.get("nonce"):
            (self.folder / f".lock-{lapsed['nonce']}.json").unlink(missing_ok=True)
        self._hold()
        return True

    # --- holding it
    def _hold(self) -> None:
        self.held = True
        self._beat(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="run-claim")
        self._thread.start()

    def _beat(self, count: int) -> None:
        atomic_write_json(self.folder / f".lock-{self.nonce}.json", {"count": count, "host": this_host()})

    def _renew(self) -> None:
        count = 0
        while not self._stop.wait(lease_seconds() / 4):
            if self.taken_by() is not None:  # taken over while we were stopped: never write on
                log.error("the claim on %s was taken over; this process no longer holds the run", self.folder)
                return
            count += 1
            try:
                self._beat(count)
            except OSError as e:  # a full or vanished file system: the run's own writes will say so
                log.warning("could not renew the claim on %s: %s", self.folder, e)

    def taken_by(self) -> dict | None:
        """The claim that replaced ours, or None while ours is in place."""
        claim = self.current()
        return None if claim is not None and claim.get("nonce") == self.nonce else (claim or {})

    def check(self) -> None:
        """Before a phase: stop with one line if the run is no longer ours."""
        if self.held and (other := self.taken_by()) is not None:
            self.held = False
            raise UserError(
                f"run {self.folder} was taken over by {holder_text(other) if other else 'another process'} while "
                f"this process did not renew its claim for over {lease_seconds():.0f} s (stopped, suspended or cut "
                f"off); this process stops here and leaves the run to that one"
            )

    def release(self) -> None:
        """End the claim: stop renewing; remove it if it is still ours."""
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._stop = None
        if self.held and self.taken_by() is None:
            self.path.unlink(missing_ok=True)
        (self.folder / f".lock-{self.nonce}.json").unlink(missing_ok=True)
        self.held = False
