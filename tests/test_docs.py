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


def _schema():
    from llm2llm.config import RunConfig

    return RunConfig()


def _boost():
    from llm2llm.config import resolve_config

    return resolve_config()  # what `make boost DATASET=snips` runs


def _checkpoints_kept() -> int:
    """How many student checkpoints the doctor's disk estimate counts at once (a 1-byte student)."""
    import tempfile
    from pathlib import Path

    from llm2llm.config import resolve_config
    from llm2llm.preflight import checkpoint_bytes

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "model.safetensors").write_bytes(b"x")
        return checkpoint_bytes(resolve_config("tiny", {"loop": {"iterations": 5}}), Path(folder)) // 2


def _sleep_held_gib() -> float:
    from llm2llm.runtime.gpu_plan import SLEEP_HELD_GIB

    return SLEEP_HELD_GIB


# Defaults the docs quote, each against the code: (file, a regex whose group 1 is the quoted value,
# the value in the code). A doc that drifts from the code fails here.
QUOTED_DEFAULTS = [
    ("README.md", r"`baselines\.eda_num_aug` sentences per example: (\d+) in the default profile",
     lambda: _boost().baselines.eda_num_aug),
    ("README.md", r"`baselines\.eda_num_aug` sentences per example: \d+ in the default profile, (\d+) in the schema",
     lambda: _schema().baselines.eda_num_aug),
    ("docs/loop.md", r"- `(\w+)` \(the schema's default", lambda: _schema().teacher.style),
    ("docs/loop.md", r"- `(\w+)` \(the default profile `cpu-qwen`'s\)", lambda: _boost().teacher.style),
    ("docs/loop.md", r"the default profile `([\w-]+)`'s", lambda: _boost().profile),
    ("docs/batch-runs.md", r"(\d) kept at once: the one selected on validation", _checkpoints_kept),
    ("docs/gpu-plan.md", r"`SLEEP_HELD_GIB`, ([\d.]+) GiB", _sleep_held_gib),
]  # fmt: skip


def test_the_defaults_the_docs_quote_are_the_code_s():
    wrong = []
    for doc, pattern, fact in QUOTED_DEFAULTS:
        found = re.search(pattern, " ".join((REPO / doc).read_text().split()))
        assert found, f"{doc}: the claim /{pattern}/ is gone; update QUOTED_DEFAULTS with the doc"
        if found.group(1) != str(fact()):
            wrong.append(f"{doc}: says {found.group(1)!r}, the code has {fact()!r} (/{pattern}/)")
    assert wrong == []


def _documented_keys(line: str) -> set[str]:
    """The keys a run-directory.md line lists in braces: {a, b: ..., c[, d: {e, f}]} -> {a, b, c, d}."""
    body = line[line.index("{") + 1 : line.rindex("}")]
    while re.search(r"\{[^{}]*\}", body):  # nested records are their own type
        body = re.sub(r"\{[^{}]*\}", "", body)
    return {part.split(":")[0].strip() for part in body.replace("[", "").replace("]", "").split(",") if part.strip()}


def test_the_run_directory_doc_lists_each_record_s_keys_as_its_type_does():
    """docs/run-directory.md and llm2llm/records.py describe the same records: every key either names
    is the other's (a new field in the code without a line in the doc fails here)."""
    from llm2llm.records import FILES, fields

    doc = (REPO / "docs" / "run-directory.md").read_text().splitlines()
    for name, kind in FILES.items():
        line = next((line for line in doc if line.strip().startswith(name) and "{" in line), None)
        assert line is not None, f"docs/run-directory.md has no line for {name}"
        required, optional = fields(kind)
        assert _documented_keys(line) == required | optional, name
