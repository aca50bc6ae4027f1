"""The arguments llm2llm gives vLLM, shared by the offline engine (engines.VLLMGenerator) and the
server (vllm_server): engine arguments from the run's vllm options, the environment vLLM reads,
and the CPU KV cache sized for a known workload."""

from __future__ import annotations

import os
from pathlib import Path

from llm2llm.offline import go_offline
from llm2llm.runtime.gpu_plan import SLEEP_WITHOUT_MEMORY, attention_shape

# The LoRA ranks vLLM can serve (vllm.config.lora.MaxLoRARanks): max_lora_rank must be one of them.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_bound(rank: int) -> int:
    """vLLM's max_lora_rank for an adapter of rank `rank`: the smallest rank it accepts that is not
    smaller (an adapter of rank 12 is served under 16). Ranks above 512 are refused by the config check."""
    return next(r for r in LORA_RANKS if r >= rank)


def configure_vllm_env(options: dict) -> None:
    """vLLM reads some settings from the environment only; set them unless the user has."""
    # No network at run time: vLLM's usage reporting and any hub lookup stay off.
    go_offline(override=False)
    # CPU backend: OpenMP threads on every core this process may use (vLLM's default binds one core
    # per rank). The KV cache size is an engine argument (vllm_engine_args); a VLLM_CPU_KVCACHE_SPACE
    # the user sets still wins, as vLLM reads it last.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))


def kv_bytes_per_token(model: Path, dtype: str, trust_remote_code: bool = False) -> int | None:
    """KV cache bytes one token takes (layers x K,V x KV heads x head size x dtype), from the
    model's config (the GPU plan's arithmetic); None where the config does not say."""
    from transformers import AutoConfig

    try:
        text = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).get_text_config()
        layers, _, kv_heads, head_dim = attention_shape(text)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * (4 if dtype == "float32" else 2)


# Where model configs keep their context length (vLLM reads these too, and takes the smallest).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def model_context(model: Path, trust_remote_code: bool = False) -> int | None:
    """The longest sequence the model's config allows, or None where it does not say plainly (no
    such key, or RoPE scaling, whose arithmetic vLLM does itself)."""
    from transformers import AutoConfig

    try:
        text = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).get_text_config()
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    scaling = getattr(text, "rope_scaling", None) or {}  # recent transformers fill in {"rope_type": "default"}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        return None
    lengths = [v for k in CONTEXT_KEYS if isinstance(v := getattr(text, k, None), int) and v > 0]
    return min(lengths) if lengths else None


def max_model_len(model: Path, options: dict) -> int | None:
    """vllm.max_model_len, lowered to the model's own context where that is shorter: the default
    (4096) is more than a 1,024- or 2,048-token model allows, and vLLM refuses such a value at
    start-up, which for a teacher comes after the run's first training and evaluation."""
    wanted = options.get("max_model_len")
    context = model_context(model, bool(options.get("trust_remote_code")))
    if wanted and context:
        return min(wanted, context)
    return wanted


def cpu_kv_cache_bytes(model: Path, options: dict, prompt_tokens: list[int], max_new_tokens: int) -> int:
    """The CPU KV cache for a known workload: room for every request of the largest batch at once
    (prompt + answer, rounded up to whole blocks), at least one request of max_model_len, at most
    vllm.cpu_kv_cache_gib. vLLM allocates and zeroes all of it at start-up (seconds per GiB on
    a CPU), and a smaller cache only means fewer requests in flight."""
    cap = int(options.get("cpu_kv_cache_gib", 4) * 2**30)
    dtype = options.get("dtype", "auto")
    per_token = kv_bytes_per_token(
        model, "float32" if dtype == "auto" else dtype, bool(options.get("trust_remote_code"))
    )
    if per_token is None or not prompt_tokens:
        return cap
    block = options.get("block_size") or 32
    tokens = sum(-(-(n + max_new_tokens) // block) * block for n in prompt_tokens)
    tokens = max(tokens, max_model_len(model, options) or 4096) + block
    return min(cap, tokens * per_token)


def vllm_engine_args(model: Path, options: dict, on_gpu: bool) -> dict:
    """Engine arguments shared by the offline engine and the server (dtype rule: VLLMConfig.dtype)."""
    dtype = options.get("dtype", "auto")
    if dtype == "auto" and not on_gpu:
        dtype = "float32"
    args = {
        "model": str(model),
        "dtype": dtype,
        "tensor_parallel_size": options.get("tensor_parallel_size") or 1,
        "enforce_eager": options.get("enforce_eager", True),
        "enable_prefix_caching": options.get("enable_prefix_caching", True),
        "trust_remote_code": bool(options.get("trust_remote_code")),
        "seed": 0,
        "load_format": "auto" if options.get("allow_pickle_weights") else "safetensors",
        # Sampling is the run's SamplingConfig alone, offline and served alike: the server does not
        # fill top_k, repetition_penalty or min_p from the model's generation_config.json.
        "generation_config": "vllm",
    }
    if (options.get("pipeline_parallel_size") or 1) > 1:
        args["pipeline_parallel_size"] = options["pipeline_parallel_size"]
    if options.get("distributed_executor_backend"):
        args["distributed_executor_backend"] = options["distributed_executor_backend"]
    if length := max_model_len(model, options):
        args["max_model_len"] = length
    if on_gpu:
        args["gpu_memory_utilization"] = options.get("gpu_memory_utilization", 0.9)
    else:
        args["kv_cache_memory_bytes"] = int(
            options.get("kv_cache_bytes") or options.get("cpu_kv_cache_gib", 4) * 2**30
        )
        # A prompt prefilled in chunks makes vLLM rewind its per-request generator, which the CPU
        # generator cannot do ("CPU Generator does not use offset"): prefill whole prompts.
        args["enable_chunked_prefill"] = False
    block_size = options.get("block_size") or (None if on_gpu else 32)
    if block_size:
        args["block_size"] = block_size
    return args


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def sleep_flag() -> list[str]:
    """The server flag that turns sleep mode on (left out in the tests' no-memory mode)."""
    return [] if os.environ.get(SLEEP_WITHOUT_MEMORY) == "1" else ["--enable-sleep-mode"]
