"""The one owner of every phase of a run: its marker (a finished phase is read back, not redone),
its timing (timings.jsonl), the run's claim, a full disk said in one line; and, for the phases that
load a model, their own process on the devices the GPU plan gave them, with a log in
runs/<run>/logs/ and a proof afterwards that its memory is free (phases.jsonl, metrics.json).

    runner.phase(it, "evaluate", compute)     the marker's result, or compute() timed and stored as the marker
    runner.call("evaluate iter_001", "evaluate", fn, *args)    a Python function in a spawned process
    runner.on("evaluate")                     the same as a callable (name, fn, *args), for generate_cached
    runner.train("train iter_001", write_request, out_dir, train_here)
                                      one process: a phase process; else torchrun (or srun / deepspeed) + ranks
    runner.kept_server("generate", start_server)                 a server kept for all iterations
    runner.kept_server("generate", start_server, sleeps=True)    ... asleep while other phases run
    runner.stop_server()                                         ... stopped, its memory checked

It sits below training and serving: the training request is written, and the server built, by
callables the loop passes in.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from llm2llm.config import RunConfig
from llm2llm.errors import UserError
from llm2llm.rundir import RunDir
from llm2llm.runtime.gpu_plan import Plan
from llm2llm.runtime.memory import ReleaseCheck
from llm2llm.runtime.phases import (
    FULL_ERRNOS,
    DiskFull,
    PhaseResult,
    become_subreaper,
    call_in_child,
    free_port,
    loopback_problem,
    run_command,
)
from llm2llm.store import RecordLog, atomic_write_json, atomic_write_jsonl, read_json, read_jsonl

log = logging.getLogger(__name__)


def slurm_head_node() -> str:
    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    ).stdout.split()
    return hosts[0]


def training_command(plan: Plan, config: RunConfig, request_path: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The command that starts every training rank, and the environment it gets."""
    per_node = plan.train_processes_per_node
    worker = ["-m", "llm2llm.training", str(request_path)]
    env = {"PYTHONUNBUFFERED": "1"}
    if plan.inventory.gpus_per_node:
        env.update(plan.devices_env("train"))
        env["NCCL_DEBUG"] = os.environ.get("NCCL_DEBUG", "WARN")
        env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"  # a hung collective fails after train.ddp_timeout
    else:
        env["DS_ACCELERATOR"] = "cpu"
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // per_node))
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={per_node}", "--max-restarts=0"]
    if plan.train_nodes == 1:
        return torchrun + ["--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={port}"] + worker, env
    if config.plan.hostfile:
        return [
            str(Path(sys.executable).with_name("deepspeed")),
            f"--hostfile={config.plan.hostfile}",
            f"--num_nodes={plan.train_nodes}",
            f"--num_gpus={per_node}",
            f"--master_port={port}",
            "--no_local_rank",
            "--module",
        ] + worker[1:], env
    if os.environ.get("SLURM_JOB_ID"):
        head = slurm_head_node()
        return [
            "srun",
            f"--nodes={plan.train_nodes}",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",
            "--export=ALL",
        ] + torchrun + [
            f"--nnodes={plan.train_nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={head}:{port}",
            f"--rdzv-id={config.run}",
        ] + worker, env
    raise UserError(
        f"plan.nodes={plan.train_nodes} needs a Slurm allocation (submit with `llm2llm slurm`) or a "
        f"DeepSpeed hostfile (plan.hostfile)"
    )


class PhaseRunner:
    def __init__(self, run: RunDir, plan: Plan, config: RunConfig):
        self.run, self.run_path, self.plan, self.config = run, run.path, plan, config
        self.lock_fd = run.lock_fd  # the run's lock, held by torchrun too (see RunDir._acquire_lock)
        self.release = ReleaseCheck(config.plan.release_tolerance_mib, config.plan.release_timeout)
        self.record = RecordLog(self.run_path / "phases.jsonl")
        become_subreaper()  # a phase's orphans (ranks of a killed torchrun) stay below us until swept
        self.last_end: float | None = None
        self.server = None
        self.server_phase: str | None = None
        self.server_sleeps = False
        self.held: dict[int, float] = {}  # MiB per GPU a sleeping server still holds

    def __enter__(self) -> "PhaseRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_server()

    def phase(self, it: int, name: str, compute: Callable):
        """The phase's stored result if its marker exists (RunDir.marker); else compute(), timed
        (timings.jsonl) and stored as the marker in one atomic write. A full disk while the driver
        writes (records, markers) is one line naming the phase and what to free."""
        marker = self.run.marker(it, name)
        if marker and marker.exists():
            return read_jsonl(marker) if marker.suffix == ".jsonl" else read_json(marker)
        self.run.claim.check()  # still ours: a holder stopped past its lease finds the run taken over and stops
        try:
            with self.run.phase(it, name):
                result = compute()
                if marker:
                    (atomic_write_jsonl if marker.suffix == ".jsonl" else atomic_write_json)(marker, result)
        except OSError as e:
            if e.errno not in FULL_ERRNOS:
                raise
            raise DiskFull(f"{name} iter_{it:03d}", e.filename, self.run_path, quota=e.errno == errno.EDQUOT) from e
        return result

    def on(self, phase: str) -> Callable:
        """call() bound to a phase: how generate_cached runs its engine where the plan puts `phase`."""
        return lambda name, fn, *args: self.call(name, phase, fn, *args)

    def stop_server(self) -> None:
        """Stop a kept server (if one runs) and check that its GPUs' memory is free again."""
        if self.server is not None:
            self.release.add_to_baseline({i: -mib for i, mib in self.held.items()})
            self.server.stop()
            self.release.wait_released(
                f"{self.server_phase} server", self.server.proc.pid, self._devices(self.server_phase)
            )
            self.server, self.held = None, {}

    def kept_server(self, phase: str, start_server: Callable[[Path, dict[str, str]], Any], sleeps: bool = False):
        """One server on the phase's devices for all iterations, started on first use by
        start_server(log_path, devices_env) (it returns a started server with .stop(), .proc and, if it
        sleeps, .sleep(), .wake_up() and .asleep), stopped and checked for released memory when the
        runner exits. split mode: it has GPUs of its own. sleeps (sequential mode, teacher.sleep): it
        shares the other phases' GPUs, asleep while they run and woken for its own phase's calls."""
        if self.server is None:
            self.server = start_server(self._log_path(f"{phase}-server"), self.plan.devices_env(phase))
            self.server_phase, self.server_sleeps = phase, sleeps
        return self.server

    def _make_room(self, name: str, phase: str) -> None:
        """Before a phase: a sleeping kept server is put to sleep for any other phase and woken for
        its own. What it still holds asleep (CUDA context, buffers) is measured and added to the
        release check's baseline while it sleeps, and recorded."""
        server = self.server
        if server is None or not self.server_sleeps or (phase == self.server_phase) != server.asleep:
            return
        started = time.monotonic()
        devices = self._devices(self.server_phase)
        if server.asleep:
            self.release.add_to_baseline({i: -mib for i, mib in self.held.items()})
            server.wake_up()
            self.held = {}
            key, what = f"wake {self.server_phase} server for {name}", "awake"
        else:
            server.sleep()
            self.held = self.release.held_now(devices)
            self.release.add_to_baseline(self.held)
            key, what = f"sleep {self.server_phase} server for {name}", "asleep"
        seconds = round(time.monotonic() - started, 3)
        self.record.append(
            [
                {
                    "key": key,
                    "phase": what,
                    "pid": server.proc.pid,
                    "seconds": seconds,
                    "held_asleep_mib": self.held,
                    "checked": "nvml" if devices and self.release.nvml.available else "-",
                    "release_seconds": 0.0,
                    "switch_seconds": None,
                }
            ]
        )
        log.info("%s in %.1f s%s", key, seconds, f"; it still holds {self.held} MiB" if self.held else "")

    def _log_path(self, name: str) -> Path:
        return self.run_path / "logs" / (name.replace(" ", "-") + ".log")

    def _devices(self, phase: str) -> list[int]:
        return [int(i) for i in self.plan.devices(phase) if i.isdigit()]

    def _finished(self, phase: str, result: PhaseResult, started: float, check_devices: bool = True) -> None:
        check = self.release.wait_released(result.name, result.pid, self._devices(phase) if check_devices else [])
        record = {
            "key": result.name,
            "phase": phase,
            "pid": result.pid,
            "seconds": result.seconds,
            "peak_memory_mib": result.peak_memory_mib,
            "exit_code": result.exit_code,
            "leftovers_killed": result.leftovers,
            **check,
            # wall time from the previous phase's release to this phase's start (the switch)
            "switch_seconds": round(started - self.last_end, 3) if self.last_end else None,
        }
        self.record.append([record])
        self.last_end = time.time()
        log.info(
            "%s: done in %.1f s; memory released (%s) in %.2f s",
            result.name,
            result.seconds,
            check["checked"],
            check["release_seconds"],
        )

    def call(self, name: str, phase: str, fn, *args):
        self._make_room(name, phase)
        started = time.time()
        payload, result = call_in_child(
            name,
            fn,
            *args,
            env=self.plan.devices_env(phase),
            log_path=self._log_path(name),
            timeout=self.config.plan.phase_timeout,
        )
        # A kept server holds its phase's GPUs on purpose: the client phase is checked for its own
        # processes only, the GPUs when the server stops.
        self._finished(
            phase, result, started, check_devices=not (phase == self.server_phase and self.server is not None)
        )
        return payload

    def train(
        self,
        name: str,
        write_request: Callable[[Path], None],
        out_dir: Path,
        train_here: Callable[[Path], Any] | None = None,
    ) -> None:
        """The training on the plan's devices: write_request(path) writes what the training reads
        (llm2llm.training's request file); it must leave out_dir/train_log.json. One process without
        DeepSpeed: train_here(path) in a phase process like evaluate's (from the forkserver, no
        torchrun); else torchrun (or srun / the deepspeed launcher) and its ranks."""
        request_path = out_dir.parent / ".train-request.json.tmp"  # removed on success; swept as a leftover otherwise
        write_request(request_path)
        self._make_room(name, "train")
        one_process = self.plan.train_nodes == 1 and self.plan.train_processes_per_node == 1
        started = time.time()
        if train_here is not None and one_process and not self.config.train.deepspeed:
            _, result = call_in_child(
                name,
                train_here,
                request_path,
                env=self.plan.devices_env("train"),
                log_path=self._log_path(name),
                timeout=self.config.plan.phase_timeout,
                inherit_fd=self.lock_fd,
            )
        else:
            if self.plan.train_nodes == 1 and (problem := loopback_problem()):
                raise UserError(f"{name}: {problem}")
            argv, env = training_command(self.plan, self.config, request_path, free_port())
            result = run_command(
                name,
                argv,
                env,
                self._log_path(name),
                self.config.plan.phase_timeout,
                pass_fds=(self.lock_fd,) if self.lock_fd is not None else (),
            )
        request_path.unlink(missing_ok=True)
        if not (out_dir / "train_log.json").exists():
            raise UserError(
                f"{name}: the training processes exited cleanly but saved no student in {out_dir}; "
                f"see {self._log_path(name)}"
            )
        self._finished("train", result, started)
