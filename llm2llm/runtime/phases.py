"""Every phase (train, evaluate, generate) runs in a child process of its own, so that the child's
exit is what frees its memory, on a GPU as on the CPU. Design: docs/gpu-plan.md.

The child starts its own session: everything it starts (torchrun and its ranks, a vLLM engine
core, a vLLM server and its workers) shares its process group. It asks the kernel for SIGTERM
when its parent dies; a Python phase answers SIGTERM by killing that whole group. After the child
ends, any process still in its group is named and killed, and the phase's devices are checked to
be back at their baseline memory (llm2llm/runtime/memory.py) before the next phase may start.

Each phase gets its own environment (device list, rendezvous port, NCCL settings), writes its
output to a log file (echoed to the terminal), may have a timeout, and a failure is fatal with
the tail of that log in the error.

A Python phase starts from a pre-warmed interpreter: multiprocessing's forkserver, started once per
llm2llm process, imports the modules named by `preload_phase_modules` (torch, transformers and
the phase code: seconds on a CPU), and forks a fresh child for each phase. The forkserver never
touches a GPU (importing torch does not initialise CUDA), so each child still starts with no
device state and its exit frees everything it allocated. LLM2LLM_PHASE_START=spawn starts each
phase in a fresh interpreter instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.private import current_umask
from llm2llm.store import open_nofollow

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_PRELOAD: list[str] = []


def preload_phase_modules(modules: list[str]) -> None:
    """Start the forkserver now, importing `modules`, so that it does so while the caller does
    other work (a run's pre-flight); the first phase then forks from a warm interpreter."""
    _PRELOAD[:] = modules
    _start_context()


def _start_context():
    method = os.environ.get("LLM2LLM_PHASE_START", "forkserver")
    if method not in ("forkserver", "spawn"):
        raise UserError(f"LLM2LLM_PHASE_START={method!r}: use forkserver (the default) or spawn")
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        # Started here, with this process's environment and not a phase's (the phase's own is
        # applied in the child), and with the preload list as it is now.
        ctx.set_forkserver_preload(list(_PRELOAD))
        forkserver.ensure_running()
    return ctx


class PhaseError(RuntimeError):
    """A phase's child process failed; the message carries the end of its output."""


class DiskFull(PhaseError):
    """A phase ran out of space (ENOSPC) or of the user's quota (EDQUOT); one line naming where,
    what is free there and the fix."""

    def __init__(self, name: str, path: str | None, fallback: Path | None, needs: int | None = None, quota=False):
        self.name, self.path, self.fallback, self.quota = name, path, fallback, quota
        super().__init__(disk_full_message(name, path, fallback, needs, quota))

    def needing(self, needs: int) -> "DiskFull":
        """The same error, saying how much the write needs (the caller knows, e.g. a checkpoint's size)."""
        return DiskFull(self.name, self.path, self.fallback, needs, self.quota)


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the device is full; the user's quota on it is
QUOTA = re.compile(r"Disk quota exceeded|os error 122|Errno 122")
NO_SPACE = re.compile(r"No space left on device|os error 28|Errno 28|" + QUOTA.pattern)


def no_space(exc: BaseException) -> tuple[str, bool] | None:
    """(the path being written, whether it was the quota) when `exc` (or what caused it) is ENOSPC or
    EDQUOT: the path is "" when the error does not say (safetensors' own I/O error); None when it is
    another error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return str(exc.filename or ""), exc.errno == errno.EDQUOT
        if NO_SPACE.search(str(exc)):
            return "", bool(QUOTA.search(str(exc)))
        exc = exc.__cause__ or exc.__context__
    return None


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _run_dir_of(log_path: Path | None) -> Path | None:
    """The folder a phase writes into, as far as its log says: runs/<run>/ for runs/<run>/logs/X.log."""
    if log_path is None:
        return None
    return log_path.parent.parent if log_path.parent.name == "logs" else log_path.parent


def disk_full_message(
    name: str, path: str | None, fallback: Path | None, needs: int | None = None, quota: bool = False
) -> str:
    """One line: the phase, the path it was writing (or the folder it writes into) and what is free there."""
    where = Path(path) if path else fallback
    free = ""
    probe = where
    while probe is not None and not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe is not None and probe.exists() and not quota:
        free = f", {_size(shutil.disk_usage(probe).free)} free there"
    needed = f" (it needs about {_size(needs)})" if needs else ""
    if quota:
        return (
            f"{name}: your disk quota is exceeded writing {where or 'its output'}{needed}; free space within it "
            "(`quota -s`; on Lustre `lfs quota -h -u $USER <mount>`) or point --runs-dir at a file system where "
            "you have room with the run moved there, and rerun the same command to resume"
        )
    return (
        f"{name}: no space left on the device writing {where or 'its output'}{free}{needed}; free space (or point "
        "--runs-dir at a larger file system with the run moved there) and rerun the same command to resume"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_problem(host: str = "127.0.0.1") -> str | None:
    """Why nothing can connect to `host` here, or None. torchrun's rendezvous, gloo and a vLLM server
    llm2llm starts all talk over loopback; with it down (a fresh `unshare -n`) torchrun would retry
    for 15 minutes before failing."""
    try:
        with socket.socket() as server, socket.socket() as client:
            server.bind((host, 0))
            server.listen(1)
            client.settimeout(5)
            client.connect(server.getsockname())
    except OSError as e:
        return (
            f"cannot connect to {host} ({e.strerror or e}): the training processes (torchrun, gloo) and a vLLM "
            f"server llm2llm starts talk over the loopback interface; bring it up (`ip link set lo up`; "
            f"it reaches nothing outside this machine)"
        )
    return None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send `sig` to this process when its parent exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: the leftover sweep below still applies
        pass


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"{pid} ({cmd[:120] or '?'})"
    except OSError:
        return str(pid)


def _state_and_start(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks since boot: with the pid, an identity
    that survives pid reuse), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def become_subreaper() -> None:
    """Linux: processes orphaned below this one (a rank whose torchrun was SIGKILLed) become its
    children instead of init's, so they stay in the driver's tree until it has killed them."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:  # not Linux: sweep_seen below still finds them
        pass


def sweep_seen(seen: dict[int, int], name: str) -> list[str]:
    """Kill every process seen in a finished phase's tree (PeakMemory.seen: pid -> start time)
    that still runs. torchrun starts each rank in a session of its own: when torchrun dies first
    (SIGKILL, OOM killer), its ranks are outside the group sweep_group kills."""
    left = [
        pid
        for pid, start in seen.items()
        if (state := _state_and_start(pid)) and state[1] == start and state[0] != "Z"
    ]
    names = [process_name(pid) for pid in left]
    if left:
        log.warning("%s: processes of the phase still running after it ended, killed: %s", name, "; ".join(names))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for pid in left:
        while time.monotonic() < deadline:
            if _reap_orphan(pid) or (state := _state_and_start(pid)) is None or state[0] == "Z":
                break
            time.sleep(0.05)
        _reap_orphan(pid)
    return names


def _reap_orphan(pid: int) -> bool:
    """Collect an orphan that was reparented to us (become_subreaper) once it has exited; True when done.
    Only pids nobody else waits for: the phase's own processes were never this process's children."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not our child (reparented to init, or already collected)
        return False


def sweep_group(pgid: int, name: str) -> list[str]:
    """Kill whatever is left in a finished phase's process group; returns what was found."""
    leftovers = [process_name(pid) for pid in group_members(pgid)]
    if leftovers:
        log.warning("%s: processes still running after the phase ended, killed: %s", name, "; ".join(leftovers))
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return leftovers


def _hwm_bytes(pid: int) -> int:
    """A process's peak resident set size so far (VmHWM in /proc/PID/status): the kernel keeps it,
    so reading it costs one small file and a spike between two reads is not missed."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """The peak memory of a phase: the sum, over the phase's process and all its descendants
    (torchrun's ranks are in sessions of their own, so the tree, not the process group), of each
    process's peak RSS (VmHWM, kept by the kernel). The thread reads each live process's VmHWM
    every `interval` s and keeps the largest value seen per process, so only a process that lives
    less than `interval` s can be missed. Two caveats, both towards more: the per-process peaks
    may fall at different moments, and a page shared by several processes (libraries, a model
    mapped by two ranks) counts once per process. The measurement must not slow the phase: it
    reads kernel counters only (bench/sampler_cost.py; no page-table walk as PSS needs)."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, int] = {}
        self.seen: dict[int, int] = {}  # every process of the tree seen: pid -> start time (sweep_seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        """The phase's process and its descendants, from each process's own children lists
        (/proc/PID/task/TID/children: reads the tree only, not every process on a shared node)."""
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:  # not started yet, or gone
                continue
            tree.append(pid)
            for tid in tasks:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        todo.extend(int(child) for child in f.read().split())
                except OSError:
                    continue
        return tree

    def sample(self) -> int:
        """One reading of every process in the tree; returns the running peak (bytes)."""
        for pid in self._tree():
            if pid not in self.seen and (state := _state_and_start(pid)):
                self.seen[pid] = state[1]
            try:
                self.peaks[pid] = max(self.peaks.get(pid, 0), _hwm_bytes(pid))
            except (OSError, ValueError, IndexError):  # ended between the listing and the read
                continue
        return self.peak_bytes

    @property
    def peak_bytes(self) -> int:
        return sum(self.peaks.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_mib(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


def tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return "(no log)"
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?([A-Za-z_.]*(?:Error|Exception|Interrupt)\b.*)$")


def root_cause(path: Path | None) -> str | None:
    """The last exception line a rank printed (not torchrun's own ChildFailedError summary)."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = ERROR_LINE.match(line.strip())
        if match and "ChildFailedError" not in line:
            return match.group(1)[:500]
    return None


@contextmanager
def _echo(path: Path | None, enabled: bool):
    """Copy what a phase writes to its log file onto our stderr while it runs (like tail -f)."""
    if path is None or not enabled:
        yield
        return
    stop = threading.Event()

    def pump():
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            while True:
                chunk = f.read()
                if chunk:
                    if hasattr(sys.stderr, "buffer"):
                        sys.stderr.buffer.write(chunk)
                    else:  # redirected to a text stream (a caller's StringIO)
                        sys.stderr.write(chunk.decode(errors="replace"))
                    sys.stderr.flush()
                elif stop.is_set():
                    return
                else:
                    time.sleep(0.2)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def _environment(env: dict[str, str]):
    """A spawned child inherits the environment at start: set it around the start only."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _open_log(path: Path | None, name: str):
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    f = os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
    f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}\n".encode())
    f.flush()
    return f


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_own_group(*_) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


class _InheritedFd:
    """An open file descriptor handed to the child (a copy of it, via multiprocessing's fd passing),
    e.g. the run's lock, which the child then holds until it exits."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return (_inherited, (reduction.DupFd(self.fd),))


def _inherited(dup) -> int:
    return dup.detach()


def _watch_driver(driver_pid: int) -> None:
    """End this phase's whole group the moment llm2llm exits, however it exits (kill -9 included).
    PR_SET_PDEATHSIG alone is late here: a forked phase's parent is the forkserver, whose own exit
    (an interpreter shutdown with torch loaded) takes seconds, and a Python SIGTERM handler waits
    for the main thread to leave C code. A thread blocked on a pidfd of the driver is neither."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(driver_pid)
        except ProcessLookupError:
            _kill_own_group()
        except (AttributeError, OSError):  # no pidfds (Linux < 5.3): poll
            while _alive(driver_pid):
                time.sleep(0.2)
            _kill_own_group()
            return
        select.select([fd], [], [])  # readable when the driver has exited
        _kill_own_group()

    threading.Thread(target=watch, name="llm2llm-watch-driver", daemon=True).start()


def _release_forkserver() -> None:
    """A forked child holds the forkserver's "alive" pipe, which keeps the forkserver running while
    any of its children live (multiprocessing's design). Closing it here lets the forkserver exit
    as soon as llm2llm does, and so this child get its PR_SET_PDEATHSIG signal: a phase must not
    outlive a killed run (the rerun would write beside it)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the one handle multiprocessing keeps
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def _child_main(conn, driver_pid: int, env: dict[str, str], umask: int, log_path, fn, args, kept_fd=None) -> None:
    # A forked child has the forkserver's environment and umask, from when it started: it gets the
    # driver's environment of now plus the phase's own (devices), as a spawned child would, before
    # anything reads it (CUDA reads CUDA_VISIBLE_DEVICES when it initialises), and the driver's umask
    # (private: llm2llm/private.py) before it creates a file.
    os.umask(umask)
    os.environ.clear()
    os.environ.update(env)
    _release_forkserver()
    parent = os.getppid()  # the llm2llm process (spawn) or its forkserver, which exits with it
    os.setsid()
    die_with_parent()
    if os.getppid() != parent or not _alive(driver_pid):  # the parent died before the request above took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, _kill_own_group)
    _watch_driver(driver_pid)
    if log_path is not None:
        fd = open_nofollow(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    try:
        conn.send(("ok", fn(*args)))
    except UserError as e:
        conn.send(("user_error", str(e)))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        traceback.print_exc()  # the whole story stays in the phase's log
        full = no_space(e)
        conn.send(("disk_full", full) if full is not None else ("error", traceback.format_exc()[-4000:]))
    finally:
        conn.close()


@dataclass
class PhaseResult:
    name: str
    pid: int
    exit_code: int | None
    seconds: float
    leftovers: list[str] = field(default_factory=list)
    peak_memory_mib: float = 0.0  # PeakMemory of the phase's process group


def _phase_result(name: str, pid: int, exit_code: int | None, start: float, memory: "PeakMemory") -> PhaseResult:
    """The record of a finished phase process; kills what is left of its group first."""
    leftovers = sweep_group(pid, name)
    leftovers += sweep_seen({p: t for p, t in memory.seen.items() if p != pid}, name)
    return PhaseResult(name, pid, exit_code, round(time.monotonic() - start, 2), leftovers, memory.peak_mib)


def _terminate(pid: int, grace: float = 30) -> None:
    """SIGTERM to a phase's whole group, then SIGKILL after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def call_in_child(
    name: str,
    fn,
    *args,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float | None = None,
    echo: bool = True,
    inherit_fd: int | None = None,
):
    """fn(*args) in a fresh child process (forked from the forkserver, or spawned); returns (its
    result, PhaseResult). Re-raises its UserError as one, and turns any other failure into
    PhaseError with the child's traceback. inherit_fd: a descriptor the child keeps open until it
    exits (the run's lock)."""
    ctx = _start_context()
    receiver, sender = ctx.Pipe(duplex=False)
    log_file = _open_log(log_path, name)
    if log_file:
        log_file.close()
    kept = _InheritedFd(inherit_fd) if inherit_fd is not None else None
    proc = ctx.Process(
        target=_child_main,
        args=(sender, os.getpid(), {**os.environ, **(env or {})}, current_umask(), log_path, fn, args, kept),
        name=f"llm2llm-{name}",
    )
    start = time.monotonic()
    with _environment(env or {}):  # spawn: the child's interpreter starts with it
        proc.start()
    sender.close()
    message = None
    memory = PeakMemory(proc.pid)
    try:
        with _echo(log_path, echo), memory:
            message = _receive(receiver, proc, start, timeout)
    finally:
        if proc.is_alive() and not isinstance(message, tuple):  # timeout, Ctrl-C or SIGTERM: end the whole group
            _terminate(proc.pid)
        proc.join()
        result = _phase_result(name, proc.pid, proc.exitcode, start, memory)
    return _payload(name, message, proc.exitcode, log_path, timeout), result


def _receive(receiver, proc, start: float, timeout: float | None) -> tuple | str | None:
    """The child's one message; "timeout" when it sent none in time, None when it died without one."""
    while True:
        if receiver.poll(1.0):
            try:
                return receiver.recv()
            except EOFError:
                return None
        if not proc.is_alive():
            return None
        if timeout and time.monotonic() - start > timeout:
            return "timeout"


def _payload(name: str, message, exit_code: int | None, log_path: Path | None, timeout: float | None):
    """What the child returned, or its failure raised as the driver's error."""
    where = f"; log: {log_path}" if log_path else ""
    if message == "timeout":
        raise PhaseError(
            f"{name}: no result within {timeout:.0f} s (plan.phase_timeout); the phase was stopped{where}"
        )
    if message is None:
        raise PhaseError(
            f"{name}: the phase process died (exit code {exit_code}){where}; "
            f"rerun the same command to continue. Last lines:\n{tail(log_path)}"
        )
    status, payload = message
    if status == "user_error":
        raise UserError(payload)
    if status == "disk_full":
        path, quota = payload
        raise DiskFull(name, path, _run_dir_of(log_path), quota=quota)
    if status == "error":
        raise PhaseError(f"{name} failed in its process{where}:\n{payload}")
    return payload


def run_in_child(name: str, fn, *args, **options):
    """call_in_child without the process record."""
    return call_in_child(name, fn, *args, **options)[0]


def run_command(
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float | None = None,
    echo: bool = True,
    pass_fds: tuple[int, ...] = (),
) -> PhaseResult:
    """A phase that is a command (torchrun and its ranks, srun, the deepspeed launcher): its own
    session, its output in log_path, SIGTERM to its group if we are interrupted; a non-zero exit
    raises PhaseError with the tail of the log."""
    log_file = _open_log(log_path, f"{name}: {' '.join(argv)}")
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file or None,
        stderr=subprocess.STDOUT if log_file else None,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=die_with_parent,
        pass_fds=pass_fds,
    )
    if log_file:
        log_file.close()
    timed_out = False
    memory = PeakMemory(proc.pid)
    try:
        with _echo(log_path, echo), memory:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:  # timeout, Ctrl-C or SIGTERM: torchrun forwards SIGTERM to its ranks
            _terminate(proc.pid)
            proc.kill()
            proc.wait()
        result = _phase_result(name, proc.pid, proc.returncode, start, memory)
    where = f"; log: {log_path}" if log_path else ""
    if timed_out:
        raise PhaseError(f"{name}: still running after {timeout:.0f} s (plan.phase_timeout); stopped{where}")
    if proc.returncode != 0:
        cause = root_cause(log_path)
        if cause and NO_SPACE.search(cause):
            raise DiskFull(name, None, _run_dir_of(log_path), quota=bool(QUOTA.search(cause)))
        raise PhaseError(
            f"{name} failed (exit code {proc.returncode})"
            + (f": {cause}" if cause else "")
            + f"{where}; rerun the same command to continue. Last lines:\n{tail(log_path)}"
        )
    return result
