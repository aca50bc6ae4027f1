"""The house rules, checked: imports point down the layers (pyproject.toml's import-linter
contract, docs/architecture.md), every module is placed in a layer, ruff's lint and format pass at
119 columns, and a test skips only for a reason tests/skip_policy.py lists."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def contract_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def test_imports_point_down_the_layers():
    proc = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "1 kept, 0 broken" in proc.stdout, proc.stdout[-3000:]


def test_every_module_has_a_layer():
    placed = set(contract_layers())
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for pkg in ("llm2llm", "launcher")
        for p in (REPO / pkg).rglob("*.py")
        if p.name != "__init__.py"
    }
    assert modules - placed == set(), "add these modules to a layer in pyproject.toml and docs/architecture.md"
    assert placed - modules == set(), "the contract names modules that do not exist"


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the packages in which the store imports the loop."""
    for pkg in ("llm2llm", "launcher"):
        subprocess.run(["cp", "-r", REPO / pkg, tmp_path / pkg], check=True)
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    store = tmp_path / "llm2llm" / "store.py"
    store.write_text(store.read_text() + "\n\ndef _up():\n    from llm2llm import loop  # noqa: F401\n")
    proc = subprocess.run(
        [BIN / "lint-imports", "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0 and "llm2llm.store -> llm2llm.loop" in proc.stdout, proc.stdout[-3000:]


def test_ruff_lint_and_format():
    lint = subprocess.run([BIN / "ruff", "check", "--quiet", "."], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = subprocess.run([BIN / "ruff", "format", "--check", "--quiet", "."], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, "run `ruff format .`:\n" + fmt.stdout[-3000:]


def _pytest_with_skip_policy(tmp_path: Path, body: str, strict: str = "1") -> subprocess.CompletedProcess:
    (tmp_path / "test_case.py").write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "skip_policy", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "LLM2LLM_STRICT_SKIPS": strict},
        capture_output=True,
        text=True,
    )


def test_a_skip_off_the_list_fails_the_session_and_one_on_it_does_not(tmp_path):
    """tests/skip_policy.py: a package that does not import (importorskip at module level) or any
    skip whose reason is not on the list fails the session by name; a GPU-only skip passes."""
    broken = _pytest_with_skip_policy(tmp_path, 'import pytest\npytest.importorskip("no_such_vllm")\n')
    assert broken.returncode == 1, broken.stdout
    assert "skips not on tests/skip_policy.py's list" in broken.stdout
    assert "could not import 'no_such_vllm'" in broken.stdout

    inside = _pytest_with_skip_policy(
        tmp_path, "import pytest\n\ndef test_x():\n    pytest.skip('a reason nobody listed')\n"
    )
    assert inside.returncode == 1 and "test_case.py::test_x: a reason nobody listed" in inside.stdout

    gpu = _pytest_with_skip_policy(
        tmp_path, "import pytest\n\ndef test_x():\n    pytest.skip('no NVIDIA driver on this machine')\n"
    )
    assert gpu.returncode == 0 and "1 skipped" in gpu.stdout, gpu.stdout

    off = _pytest_with_skip_policy(tmp_path, 'import pytest\npytest.importorskip("no_such_vllm")\n', strict="0")
    assert off.returncode == 5, off.stdout  # pytest's own "no tests ran", as without the policy


def test_the_steps_talk_to_the_roles_not_to_the_runner_or_the_plan():
    """Step bodies (evaluate, the teacher's requests, the methods, iteration 0) reach the models only
    through roles.Student and roles.Teacher: where a phase runs (the runner, the GPU plan, engine
    options, generate_cached's process) is the roles' business (docs/architecture.md)."""
    import re

    for name in ("evaluation.py", "teacher.py", "methods.py", "iteration0.py"):
        text = (REPO / "llm2llm" / name).read_text()
        found = re.findall(r"\brunner\b|\.plan\b|vllm_options|generate_cached|EngineSpec|PhaseRunner", text)
        assert found == [], f"llm2llm/{name}: {sorted(set(found))}"
