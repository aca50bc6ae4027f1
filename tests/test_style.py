"""The house rules, checked: imports point down the layers (pyproject.toml's import-linter
contract, docs/architecture.md), every module is placed in a layer, and ruff's lint and format
pass at 119 columns."""

from __future__ import annotations

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
