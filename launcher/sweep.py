"""`llm2llm sweep configs/sweeps/<name>.yaml`: datasets x teachers x seed sizes x RNG seeds x
methods, expanded into ordinary boost runs under one folder, run one after another here or
submitted to Slurm, then summarised with `llm2llm compare`. Design: docs/batch-runs.md.

A run's state is its run directory alone: finished runs (metrics.json says complete) are skipped,
unfinished ones resume, and a run whose Slurm job is still queued or running is not submitted again.
So rerunning the same sweep command after anything (a crash, a preemption, a finished sweep) does
only the work that is left, and none when nothing is.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from launcher.options import build_config
from launcher.slurm import SlurmJob, boost_arguments, sbatch_script
from llm2llm.config import DEFAULT_PROFILE, Method, RunConfig, Section, format_validation_error, load_yaml, preset_path
from llm2llm.errors import UserError
from llm2llm.store import read_json

SWEEP_DIR = Path(__file__).resolve().parent.parent / "configs" / "sweeps"


class SlurmOptions(Section):
    time: str = Field("24:00:00", description="Time limit of each run's job.")
    partition: str | None = Field(None, description="Slurm partition.")
    account: str | None = Field(None, description="Slurm account.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs each run's job asks for.")
    cpus_per_node: int | None = Field(
        None, ge=1, description="CPU cores each run's job asks for; default 8 per GPU, or 2."
    )
    mem: str = Field("0", description="Memory per node (0 = all of it).")


class SweepConfig(Section):
    name: str = Field("", description="Sweep name; default: the file's name. Runs go to <runs_dir>/.")
    profile: str = Field(
        DEFAULT_PROFILE, description="Run profile every run starts from (configs/profiles/ or a YAML path)."
    )
    datasets: list[str] = Field(["snips"], min_length=1, description="Built-in task names or task spec YAML paths.")
    teachers: list[str] = Field(
        [], description="Registry names or local model folders; empty = the profile's teacher."
    )
    seed_sizes: list[float] = Field([], description="Seed sizes (counts or fractions); empty = the profile's.")
    seeds: list[int] = Field([0], min_length=1, description="RNG seeds (data.rng_seed): one run each.")
    methods: list[Method] = Field(
        ["llm2llm"], min_length=1, description="Run methods (llm2llm, plain, one-shot, auggpt, eda)."
    )
    set: dict[str, Any] = Field({}, description="Config overrides for every run, as dotted keys: {train.epochs: 1}.")
    runs_dir: str = Field("", description="Folder of the sweep's runs; default runs/sweeps/<name>.")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)


@dataclass
class SweepRun:
    name: str
    options: dict  # launcher.cli.build_config keyword options: data__dataset=..., run=..., runs_dir=...
    sets: tuple[str, ...]
    config: RunConfig

    @property
    def path(self) -> Path:
        return Path(self.config.runs_dir) / self.config.run

    def finished(self) -> bool:
        metrics = self.path / "metrics.json"
        return metrics.exists() and bool(read_json(metrics).get("complete"))

    def boost_args(self, profile: str) -> list[str]:

        return boost_arguments(profile, self.options, self.sets)


def sweep_path(spec: str) -> Path:
    return preset_path(spec, SWEEP_DIR, "sweep")


def load_sweep(spec: str) -> SweepConfig:
    path = sweep_path(spec)
    try:
        sweep = SweepConfig.model_validate(load_yaml(path))
    except ValidationError as e:
        raise UserError(
            format_validation_error(e, str(path)).replace("`llm2llm config --explain`", "docs/batch-runs.md")
        ) from None
    if not sweep.name:
        sweep.name = path.stem
    if not sweep.runs_dir:
        sweep.runs_dir = str(Path("runs") / "sweeps" / sweep.name)
    return sweep


def _short(name: str) -> str:
    """A teacher's name inside a run name: a registry name as it is, a folder by its last part."""
    return Path(name.rstrip("/")).name if "/" in name else name


def expand(sweep: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep, in order: dataset, teacher, seed size, seed, method (so a stopped
    sweep has compared every method on the same seeds). Each config is resolved and validated
    here, before any run starts."""

    sets = tuple(
        f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in sweep.set.items()
    )
    runs, names = [], set()
    for dataset in sweep.datasets:
        for teacher in sweep.teachers or [None]:
            for seed_size in sweep.seed_sizes or [None]:
                for seed in sweep.seeds:
                    for method in sweep.methods:
                        parts = [
                            Path(dataset).stem,
                            _short(teacher) if teacher else None,
                            f"n{seed_size:g}" if seed_size is not None else None,
                            f"seed{seed}",
                            method,
                        ]
                        name = "-".join(p for p in parts if p)
                        if name in names:
                            raise UserError(
                                f"sweep {sweep.name}: two runs would both be named {name}; list each value once"
                            )
                        names.add(name)
                        options = {
                            "data__dataset": dataset,
                            "teacher__model": teacher,
                            "data__seed_size": seed_size,
                            "data__rng_seed": seed,
                            "loop__method": method,
                            "run": name,
                            "runs_dir": sweep.runs_dir,
                        }
                        options = {k: v for k, v in options.items() if v is not None}
                        runs.append(SweepRun(name, options, sets, build_config(sweep.profile, sets, **options)))
    return runs


def preflight(runs: list[SweepRun]) -> None:
    """Model folders complete and data present for every run, before any work starts."""
    from llm2llm.data import load_task_data
    from llm2llm.models import checked_model

    seen = set()
    for run in runs:
        student, teacher = run.config.student, run.config.teacher
        for key, check in (
            (student.model, lambda name: checked_model(name, **student.loading())),
            (teacher.model, lambda name: checked_model(name, **teacher.loading())),
            (
                run.config.data.model_dump_json(exclude={"rng_seed", "seed_size"}),
                lambda _: load_task_data(run.config.data),
            ),
        ):
            if key not in seen:
                check(key)
                seen.add(key)


def run_locally(sweep: SweepConfig, runs: list[SweepRun], echo) -> list[str]:
    """One boost after another, in child processes; returns the runs that failed (the others go on)."""
    failed = []
    for i, run in enumerate(runs, 1):
        if run.finished():
            echo(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
            continue
        echo(f"[{i}/{len(runs)}] {run.name}: {'resuming' if (run.path / 'config.yaml').exists() else 'starting'}")
        child = subprocess.Popen([sys.executable, "-m", "launcher.cli", "boost", *run.boost_args(sweep.profile)])
        try:
            code = child.wait()
        except BaseException:  # SIGTERM / Ctrl-C: the run stops at a safe point and resumes on the next sweep
            child.send_signal(signal.SIGTERM)
            child.wait()
            raise
        if code != 0:
            echo(f"[{i}/{len(runs)}] {run.name}: FAILED (exit {code}); see {run.path / 'log.txt'}")
            failed.append(run.name)
    return failed


def queued_jobs() -> dict[str, str]:
    """Run directory -> Slurm job id of this user's jobs still queued or running (the job comment
    holds the run dir)."""
    out = _slurm_command(["squeue", "--me", "--noheader", "--format=%i|%k"])
    if out.returncode != 0:
        raise UserError(f"squeue failed ({out.stderr.strip() or out.returncode}); is Slurm reachable from this host?")
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, _, comment = line.partition("|")
        jobs[comment.strip()] = job_id.strip()
    return jobs


def submit(sweep: SweepConfig, runs: list[SweepRun], echo) -> list[str]:
    """An sbatch job per unfinished run not already queued, then a summary job after all of them."""
    from llm2llm.store import atomic_write_text

    queued = queued_jobs()
    job = SlurmJob(nodes=1, **sweep.slurm.model_dump())
    job_ids = []
    for i, run in enumerate(runs, 1):
        run_dir = str(run.path.resolve())
        if run.finished():
            echo(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
        elif run_dir in queued:
            echo(f"[{i}/{len(runs)}] {run.name}: already queued as job {queued[run_dir]}")
            job_ids.append(queued[run_dir])
        else:
            script = run.path / "slurm.sbatch"
            atomic_write_text(script, sbatch_script(run.config, job, sweep.profile, run.sets, run.options))
            (run.path / "logs").mkdir(parents=True, exist_ok=True)
            job_id = _sbatch([str(script)])
            echo(f"[{i}/{len(runs)}] {run.name}: submitted job {job_id}")
            job_ids.append(job_id)
    return job_ids


def submit_summary(sweep: SweepConfig, spec: Path, job_ids: list[str]) -> str:
    from llm2llm.store import atomic_write_text

    summary_dir = Path(sweep.runs_dir) / "summary"
    command = [sys.executable, "-m", "launcher.cli", "sweep", str(spec.resolve()), "--summary-only"]
    script = "\n".join(["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(os.getcwd())}", shlex.join(command), ""])
    path = summary_dir / "summary.sbatch"
    atomic_write_text(path, script)
    return _sbatch(
        [
            f"--job-name=llm2llm-{sweep.name}-summary",
            f"--dependency=afterany:{':'.join(job_ids)}",
            f"--output={summary_dir.resolve()}/slurm-%j.out",
            "--cpus-per-task=1",
            f"--comment={summary_dir.resolve()}",
            "--time=00:30:00",
            *([f"--partition={sweep.slurm.partition}"] if sweep.slurm.partition else []),
            *([f"--account={sweep.slurm.account}"] if sweep.slurm.account else []),
            str(path),
        ]
    )


def _slurm_command(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(
            f"{command[0]} not found: --slurm needs the Slurm client commands on this host "
            f"(Debian: apt-get install slurm-client); without --slurm the sweep runs here"
        ) from None


def _sbatch(args: list[str]) -> str:
    out = _slurm_command(["sbatch", "--parsable", *args])
    if out.returncode != 0:
        raise UserError(f"sbatch {args[-1]} failed: {out.stderr.strip() or out.returncode}")
    return out.stdout.strip().split(";")[0]


def wait_for(job_ids: list[str], poll_seconds: float = 5) -> None:
    """Until none of the jobs is queued or running."""
    pending = set(job_ids)
    while pending:
        time.sleep(poll_seconds)
        out = _slurm_command(["squeue", "--noheader", "--format=%i", "--jobs", ",".join(sorted(pending))])
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise UserError(f"squeue failed: {out.stderr.strip()}")
        pending &= set(out.stdout.split())


def summarise(sweep: SweepConfig, runs: list[SweepRun]) -> Path | None:
    """<runs_dir>/summary/compare.md, .png and .html over the sweep's runs that have any results."""
    from llm2llm.compare import compare

    have = [run.path for run in runs if (run.path / "metrics.json").exists()]
    finished = [run for run in runs if run.finished()]
    if not finished:
        return None
    path, _ = compare(have, Path(sweep.runs_dir) / "summary")
    status = {run.name: ("finished" if run.finished() else "unfinished") for run in runs}
    from llm2llm.store import atomic_write_text

    text = json.dumps(status, indent=1) + "\n"
    status_path = path.with_name("runs.json")
    if not status_path.exists() or status_path.read_text() != text:
        atomic_write_text(status_path, text)
    return path
