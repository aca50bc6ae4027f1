"""Text generation behind one small interface, used for the teacher and for student evaluation.

An engine takes rendered prompt strings and returns one completion per prompt. Batches are
chosen by the caller (see `generate_cached`), which keeps results reproducible across resumes:
each batch is seeded from its first request's key, and answers are stored as they arrive.
The transformers engine here is the CPU/fallback path; the vLLM engines plug in beside it.
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from llm2llm.config import SamplingConfig
from llm2llm.store import RecordLog


class Generator(Protocol):
    name: str

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[str]: ...

    def close(self) -> None: ...


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render_chat(tokenizer, user_message: str) -> str:
    """The prompt text for one user turn: the model's chat template if it has one, else plain."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
    return f"{user_message}\nAnswer: "


def encode(tokenizer, text: str) -> list[int]:
    """Token ids for a prompt, with the BOS token the model expects exactly once."""
    has_bos = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    return tokenizer(text, add_special_tokens=not has_bos)["input_ids"]


def cut_at_stop(text: str, stop: list[str]) -> str:
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


class TransformersGenerator:
    """Batched `generate` with left padding, fp32 on CPU (bf16 on GPU)."""

    def __init__(self, model_path: Path, adapter_path: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        self.name = str(model_path)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(model_path if adapter_path is None else adapter_path)
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, trust_remote_code=False)
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
        self.model = model.to(self.device).eval()

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[str]:
        torch = self.torch
        torch.manual_seed(seed)
        ids = [encode(self.tokenizer, p) for p in prompts]
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        sample = sampling.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                stop_strings=sampling.stop or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        texts = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [cut_at_stop(t, sampling.stop) for t in texts]

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()


def request_key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def generate_cached(
    open_engine, requests: list[dict], log: RecordLog, sampling: SamplingConfig, batch_size: int, desc: str
) -> dict[str, str]:
    """Answer every request ({key, prompt}) not already in `log`, storing each batch as it finishes.

    Batches are cut from the full, ordered request list, so a rerun after a crash regenerates
    exactly the missing batches with the same seeds. The engine is opened only if work remains.
    """
    batches = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]
    todo = [b for b in batches if any(r["key"] not in log for r in b)]
    if todo:
        engine = open_engine()
        try:
            for batch in tqdm(todo, desc=desc, unit="batch"):
                seed = int(request_key(sampling.seed, batch[0]["key"]), 16) % (2**31)
                outputs = engine.generate([r["prompt"] for r in batch], sampling, seed)
                log.append({**r, "output": o} for r, o in zip(batch, outputs))
        finally:
            engine.close()
    return {r["key"]: log.records[r["key"]]["output"] for r in requests}
