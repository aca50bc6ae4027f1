"""Shared fixtures. Tests use real data from ../shared/datasets (or $LLM2LLM_DATA_DIR) and real
models from the model store (`make install` provisions them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm2llm.data import default_data_dir
from llm2llm.models import model_problem, provision, resolve_model
from llm2llm.store import read_jsonl  # noqa: F401 - the tests import it from here

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
