"""Run one phase (an engine's whole life) in a child process, so that the child's exit is what
frees its memory, on a GPU as on the CPU.

The child starts its own session: everything it starts (a vLLM engine core, a vLLM server and
its workers) shares its process group. It asks the kernel for SIGTERM when its parent dies, and
answers SIGTERM by killing that whole group, so a kill -9 of llm2llm leaves nothing running.
After the child ends, any process still in its group is named and killed.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import traceback

from llm2llm.errors import UserError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class PhaseError(RuntimeError):
    """A phase's child process failed; the message carries the end of its traceback."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send `sig` to this process when its parent exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: the leftover sweep below still applies
        pass


def _kill_own_group(*_) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _child_main(conn, parent_pid: int, fn, args) -> None:
    os.setsid()
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, _kill_own_group)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        conn.send(("ok", fn(*args)))
    except UserError as e:
        conn.send(("user_error", str(e)))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("error", traceback.format_exc()[-4000:]))
    finally:
        conn.close()


def group_members(pgid: int) -> list[int]:
    """Pids of live processes in a process group (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def _sweep(pgid: int, name: str) -> None:
    leftovers = group_members(pgid)
    if leftovers:
        names = []
        for pid in leftovers:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    names.append(f"{pid} ({f.read().strip()})")
            except OSError:
                names.append(str(pid))
        log.warning("%s: processes still running after the phase ended, killed: %s", name, ", ".join(names))
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_in_child(name: str, fn, *args):
    """fn(*args) in a fresh spawned process; returns its result, re-raises its UserError as one,
    and turns any other failure into PhaseError with the child's traceback."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(sender, os.getpid(), fn, args), name=f"llm2llm-{name}")
    proc.start()
    sender.close()
    result = None
    try:
        result = receiver.recv()
    except EOFError:
        pass
    finally:
        if proc.is_alive() and result is None:  # interrupted (Ctrl-C, SIGTERM): end the whole group
            proc.terminate()
        proc.join()
        _sweep(proc.pid, name)
    if result is None:
        raise PhaseError(f"{name}: the phase process died (exit code {proc.exitcode}); rerun the same command to continue")
    status, payload = result
    if status == "user_error":
        raise UserError(payload)
    if status == "error":
        raise PhaseError(f"{name} failed in its process:\n{payload}")
    return payload
