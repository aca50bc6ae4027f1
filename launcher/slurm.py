"""The sbatch script for a boost: one Slurm job, one node or several.

The loop runs once, on the job's first node; evaluation and generation run there. On several
nodes each training phase reaches all of them with `srun` + `torchrun` (llm2llm/runtime/runner.py).
The job asks for SIGUSR1 before its time limit and then requeues itself; SIGTERM (scancel, preemption)
stops it. Either way llm2llm stops at once, and a requeued job reruns the same command, which resumes
the run where it stopped.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from launcher.options import RUN_OPTIONS, modern
from llm2llm.config import RunConfig
from llm2llm.offline import OFFLINE_ENV


@dataclass
class SlurmJob:
    nodes: int = 1
    gpus_per_node: int = 0
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    cpus_per_node: int | None = None
    mem: str = "0"
    warn_seconds: int = 120  # SIGUSR1 this long before the time limit: stop, then requeue
    max_requeues: int = 50  # a job stopped by its time limit requeues itself this many times at most


def _option_flag(key: str) -> str:

    for flag, path, _, _ in RUN_OPTIONS:
        if path.replace(".", "__") == key:
            return flag
    return "--" + key.replace("_", "-")


def boost_arguments(profile: str, options: dict, sets: tuple[str, ...]) -> list[str]:
    """The `llm2llm boost` arguments that rebuild the same config: profile, run options, --set items."""
    args = ["--profile", profile]
    for key, value in modern(options).items():
        if value is not None:
            args += [_option_flag(key), str(value)]
    for item in sets:
        args += ["--set", item]
    return args


def sbatch_script(config: RunConfig, job: SlurmJob, profile: str, sets: tuple[str, ...], options: dict) -> str:

    run_dir = (Path(config.runs_dir) / config.run).resolve()
    cpus = job.cpus_per_node or (8 * job.gpus_per_node if job.gpus_per_node else 2)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=llm2llm-{config.run}",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={job.mem}",
        f"#SBATCH --time={job.time}",
        f"#SBATCH --output={run_dir}/logs/slurm-%j.out",
        "#SBATCH --open-mode=append",
        f"#SBATCH --comment={run_dir}",  # `llm2llm sweep` finds a run's queued job by it
        f"#SBATCH --signal=B:USR1@{job.warn_seconds}",  # the time limit is near: stop and requeue (TERM: stop)
        "#SBATCH --requeue",
    ]
    if job.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    if job.partition:
        lines.append(f"#SBATCH --partition={job.partition}")
    if job.account:
        lines.append(f"#SBATCH --account={job.account}")
    cmd = [sys.executable, "-m", "launcher.cli", "boost", *boost_arguments(profile, options, sets)]
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        "# No network at run time; models and data are local paths.",
        *[f"export {k}={shlex.quote(v)}" for k, v in OFFLINE_ENV.items()],
        f"mkdir -p {shlex.quote(str(run_dir / 'logs'))}",
        "# Rerunning the same command resumes the run: a requeued job continues where this one stopped.",
        " ".join(shlex.quote(c) for c in cmd) + " &",
        "boost=$!",
        f"# SIGUSR1, {job.warn_seconds} s before the time limit: boost stops at once and the job requeues itself",
        "# (Slurm does not requeue a job that reaches its limit); a training phase saves a checkpoint as it stops and",
        "# resumes from it (or from its last periodic one, train.checkpoint_minutes), so a job whose limit is shorter",
        "# than a phase still finishes, a requeue at",
        "# a time, bounded so that one making no progress does not loop for ever. SIGTERM (scancel, preemption,",
        "# scontrol requeue): boost stops; Slurm decides what comes next.",
        "stop() {",
        "  trap '' TERM USR1  # one stop at a time: the TERM Slurm sends after the requeue must not re-enter it",
        "  kill -TERM $boost; wait $boost || true",
        '  if [ "${1:-}" = requeue ]; then',
        f'    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {job.max_requeues} ]; then',
        '      scontrol requeue "$SLURM_JOB_ID" || true',
        "    fi",
        "  fi",
        "  exit 0",
        "}",
        "trap 'stop requeue' USR1",
        "trap 'stop' TERM",
        "wait $boost",
    ]
    return "\n".join(lines) + "\n"
