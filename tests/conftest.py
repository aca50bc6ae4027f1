"""Shared fixtures. Tests use real data from ../shared/datasets (or $LLM2LLM_DATA_DIR) and real
models from the model store (`make install` provisions them)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _pin_xdist_worker() -> None:
    """Under `pytest -n N` (make test) each worker gets cores of its own, before anything imports
    torch: OpenMP sizes its threads to them, and no thread of one worker stalls on a core the
    other holds. What a worker starts (phases, torchrun ranks, vLLM engines) inherits the cores."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and 1 < count <= len(cpus):
        share = len(cpus) // count
        index = int(worker.removeprefix("gw"))
        os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])


_pin_xdist_worker()
# Every process this test session starts carries this mark in its environment: a test that looks
# for leftover processes (tests/test_vllm.py) counts only its own session's, not another worker's.
os.environ["LLM2LLM_TEST_SESSION"] = str(os.getpid())
# The generation cache's signing key (~/.config/llm2llm/cache-key) of this session's own, not the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="llm2llm-test-config-")

from llm2llm.offline import go_offline  # noqa: E402

go_offline()  # as the CLI does, before anything imports the Hugging Face libraries (the doctor checks it)

from skip_policy import (  # noqa: E402, F401 - its hooks, taken as this conftest's
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

from llm2llm.data import default_data_dir  # noqa: E402
from llm2llm.models import model_problem, provision, resolve_model  # noqa: E402
from llm2llm.store import read_jsonl  # noqa: E402, F401 - the tests import it from here

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    assert (path / "snips" / "train.jsonl").exists(), f"datasets not found at {path}; set LLM2LLM_DATA_DIR"
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return provision("tiny-llama")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = resolve_model("smollm2-135m-instruct")
    assert model_problem(path) is None, "SmolLM2 not provisioned: run `make install`"
    return path


def tiny_boost_args(tmp_path: Path, data_dir: Path, run: str, *extra: str) -> list[str]:
    """`boost --profile tiny` into tmp_path/runs/<run>, reading the shared data sets."""
    return ["boost", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"), "--run", run,
            "--data-dir", str(data_dir), *extra]  # fmt: skip


def cli_in_process(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`llm2llm ARGS` as a function call in this process (launcher.cli.run), output captured: for
    commands whose process is not what a test is about (doctor, config, plan, models, results, a
    boost that only builds what a test reads). Saves the interpreter start and the imports a child
    pays again for every call, and a boost's phases fork from this process's forkserver, started
    (torch and transformers imported) once per test session. Log lines are not in the output here:
    a test about what a command logs uses run_cli."""
    from launcher.cli import run

    out, err = io.StringIO(), io.StringIO()
    saved_cwd, saved_term, saved_env = os.getcwd(), signal.getsignal(signal.SIGTERM), dict(os.environ)
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.INFO)  # what the CLI's basicConfig sets (it does nothing where pytest has handlers)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(list(args))
    finally:
        os.chdir(saved_cwd)
        signal.signal(signal.SIGTERM, saved_term)
        root.setLevel(saved_level)
        os.environ.clear()
        os.environ.update(saved_env)
    proc = subprocess.CompletedProcess(["llm2llm", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"llm2llm {' '.join(args)} failed ({code}):\n{proc.stderr[-3000:]}")
    return proc


def run_cli(
    *args: str, cwd: Path, check: bool = True, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """The real `llm2llm` command in a child process (with `env` added to the environment)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"llm2llm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


# `make test` runs the suite on 2 workers, each taking whole modules in this order (pytest -n 2
# --dist loadfile --no-loadscope-reorder): the longest modules first, so that none of them is left
# running alone at the end. (`make test-all`, what CI runs, includes the batch modules.)
LONGEST_FIRST = [
    "test_wheelhouse",
    "test_smollm2",
    "test_vllm",
    "test_loop",
    "test_slurm",
    "test_teacher_model",
    "test_teacher_faults",
    "test_deepspeed",
    "test_methods",
    "test_sweep",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: in-module order stays
