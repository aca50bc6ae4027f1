"""Docs that stay true: every repository path named in README.md, docs/ and the code's docstrings
exists, and docs/configuration.md is what `llm2llm config --explain` prints."""

from __future__ import annotations

import ast
import re

from conftest import REPO

# A path into the repository: starts with one of its top-level folders (or is a top-level file).
TOP = ("llm2llm", "launcher", "configs", "docs", "bench", "tests", ".ci")
PATH = re.compile(r"(?<![\w/.<-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(t) for t in TOP))


def texts():
    for path in [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]:
        yield path.relative_to(REPO), path.read_text()
    for pkg in ("llm2llm", "launcher", "bench"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            yield path.relative_to(REPO), "\n".join(ast.get_docstring(n) or "" for n in nodes)
            yield path.relative_to(REPO), "\n".join(line for line in path.read_text().splitlines() if "#" in line)


def test_every_repository_path_named_in_the_docs_exists():
    missing = []
    for source, text in texts():
        for found in PATH.finditer(text):
            path = found.group(1).rstrip(".")
            if any(c in path for c in "*<>{}") or "NNN" in path:
                continue  # a pattern, not a path
            if re.search(r"(?i)\bwrites\s+$", text[max(0, found.start() - 8) : found.start()]):
                continue  # what a script writes when it runs (a bench's results), not a reference
            if not (REPO / path).exists():
                missing.append(f"{source}: {path}")
    assert missing == []


def test_the_configuration_reference_is_current():
    from llm2llm.config import config_reference

    assert (REPO / "docs" / "configuration.md").read_text() == config_reference() + "\n", "run `make docs`"
