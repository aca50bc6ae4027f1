"""Text generation behind one small interface, used for the teacher and for student evaluation.

An engine takes rendered prompt strings, one seed per prompt, and returns one completion per
prompt. Every engine sees the same token ids (`encode`), so engines agree on greedy outputs:
  transformers  batched HF `generate` (the fallback; seeds the batch with its first request's seed)
  vllm          an offline vLLM engine (`LLM`), a seed per request, base + LoRA adapter for students
  openai        an OpenAI-compatible completions server (vLLM's), a seed per request
`open_engine` builds one from an EngineSpec; generation.py runs it in the phase's own process. The
student's engines (transformers, vllm) also `score` given answers: their log-probability after the
prompt (seed_eval.rank_by=confidence).
"""

from __future__ import annotations

import gc
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple, Protocol

from llm2llm.config import SamplingConfig
from llm2llm.errors import TeacherError
from llm2llm.vllm_args import (
    configure_vllm_env,
    cpu_kv_cache_bytes,
    cuda_available,
    lora_rank_bound,
    vllm_engine_args,
)
from llm2llm.vllm_server import VLLMServer


class Completion(NamedTuple):
    text: str
    finish_reason: str  # "stop": the model ended (EOS or a stop string); "length": cut by max_new_tokens


class Generator(Protocol):
    name: str

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]: ...

    def close(self) -> None: ...


@dataclass
class EngineSpec:
    """What a phase's process needs to build its engine (picklable)."""

    kind: str  # transformers | vllm | vllm-server | openai
    model: Path  # the model folder (for a LoRA student: the base)
    adapter: Path | None = None  # a LoRA adapter folder on top of `model`
    vllm: dict = field(default_factory=dict)  # VLLMConfig fields + the model's loading opt-ins (ModelSource.loading)
    url: str | None = None  # openai: the server's base URL
    socket: Path | None = None  # openai: a Unix socket the URL is reached through (a server llm2llm started)
    api_key: str | None = None  # openai: the key (from the environment, never stored)
    served_model: str | None = None
    server_log: Path | None = None  # vllm-server: where the server's output goes


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# The day chat templates that print today's date (strftime_now: Llama 3.x and others) see, whatever the
# day: the same example renders to the same prompt in training, in evaluation and in cache keys, across
# midnight and across runs. Llama 3.1's own template falls back to this date where strftime_now is missing.
TEMPLATE_DATE = datetime(2024, 7, 26)


def _template_clock(fmt: str) -> str:
    return TEMPLATE_DATE.strftime(fmt)


def render_chat(tokenizer, user_message: str) -> str:
    """The prompt text for one user turn: the model's chat template if it has one, else plain."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}],
            tokenize=False,
            add_generation_prompt=True,
            strftime_now=_template_clock,  # shadows the template global that reads the clock
        )
    return f"{user_message}\nAnswer: "


def encode(tokenizer, text: str) -> list[int]:
    """Token ids for a prompt, with the BOS token the model expects exactly once."""
    has_bos = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    return tokenizer(text, add_special_tokens=not has_bos)["input_ids"]


def target_token_ids(tokenizer, target: str) -> list[int]:
    """An answer's token ids as training appends them to the prompt (llm2llm/training.py), EOS left out."""
    return tokenizer(target, add_special_tokens=False)["input_ids"]


def cut_at_stop(text: str, stop: list[str]) -> str:
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


class TransformersGenerator:
    """Batched `generate` with left padding, fp32 on CPU (bf16 on GPU)."""

    def __init__(self, model_path: Path, adapter_path: Path | None = None, options: dict | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        options = options or {}
        self.name = str(model_path)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        trust = options.get("trust_remote_code", False)
        self.tokenizer = load_tokenizer(model_path if adapter_path is None else adapter_path, trust)
        self.tokenizer.padding_side = "left"
        # On GPUs the layers spread over every GPU the phase was given (the plan gives a large teacher
        # several; HF generate has no tensor parallel), the first ones filled first.
        model = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=dtype,
            trust_remote_code=trust,
            use_safetensors=None if options.get("allow_pickle_weights") else True,
            device_map="auto" if self.device == "cuda" else None,
        )
        self.model_class = type(model).__name__
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
        self.model = model.eval()
        self.device = model.device  # where the inputs go: the first layers' GPU, or the CPU

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        torch = self.torch
        torch.manual_seed(seeds[0])  # one generator for the batch: batches are cut reproducibly
        ids = [encode(self.tokenizer, p) for p in prompts]
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                generation_config=self._generation_config(sampling),
                stop_strings=sampling.stop or None,
                tokenizer=self.tokenizer,
            )
        generated = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        eos = self.model.generation_config.eos_token_id
        ends = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        # A row that ended has EOS (or a stop string) in it, padding after; one that did not was cut.
        return [
            Completion(
                cut_at_stop(text, sampling.stop),
                "stop" if ends & set(row.tolist()) or any(s and s in text for s in sampling.stop) else "length",
            )
            for text, row in zip(texts, generated)
        ]

    def _generation_config(self, sampling: SamplingConfig):
        """What `generate` samples with: the run's sampling settings and nothing else. The model
        folder's generation_config.json gives only its special tokens: its top_k, repetition_penalty or
        min_p would make this engine sample otherwise than vLLM's (engines agree: SamplingConfig)."""
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        own = self.model.generation_config
        return GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=0 if sample else None,
            eos_token_id=own.eos_token_id,
            bos_token_id=own.bos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def score(self, prompts: list[str], targets: list[str]) -> list[float]:
        """The log-probability of each target right after its prompt (the sum over its tokens)."""
        torch, scores = self.torch, []
        with torch.inference_mode():
            for prompt, target in zip(prompts, targets):
                prompt_ids, target_ids = encode(self.tokenizer, prompt), target_token_ids(self.tokenizer, target)
                ids = torch.tensor([prompt_ids + target_ids], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
                picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids) :, None])
                scores.append(float(picked.sum()))
        return scores

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()  # every GPU the layers were spread over


def _sampling_kwargs(sampling: SamplingConfig) -> dict:
    greedy = sampling.temperature == 0
    return {
        "temperature": sampling.temperature,
        "top_p": 1.0 if greedy else sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "stop": sampling.stop or None,
    }


# vLLM's own values for what SamplingConfig leaves out, sent with every request to a server: a
# server started with --generation-config auto (vLLM's default) fills what a request omits from the
# model's generation_config.json, which the offline engine never reads.
SERVER_NEUTRAL = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


class VLLMGenerator:
    """vLLM's offline engine; a LoRA student is served as base + adapter (no merge)."""

    def __init__(
        self, model_path: Path, adapter_path: Path | None, options: dict, workload: tuple[list[str], int] | None = None
    ):
        """workload: (the prompts of the largest batch, max new tokens), to size the CPU KV cache."""
        configure_vllm_env(options)
        if options.get("engine_in_process", True):
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.name = str(adapter_path or model_path)
        self.tokenizer = load_tokenizer(adapter_path or model_path, bool(options.get("trust_remote_code")))
        on_gpu = cuda_available()
        if workload and not on_gpu:
            prompts, max_new_tokens = workload
            options = {
                **options,
                "kv_cache_bytes": cpu_kv_cache_bytes(
                    model_path, options, [len(encode(self.tokenizer, p)) for p in prompts], max_new_tokens
                ),
            }
        args = vllm_engine_args(model_path, options, on_gpu)
        self.lora = None
        if adapter_path is not None:
            from vllm.lora.request import LoRARequest

            rank = json.loads((adapter_path / "adapter_config.json").read_text())["r"]
            args.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_bound(rank))
            self.lora = LoRARequest("student", 1, str(adapter_path))
        self.prefix_caching = args["enable_prefix_caching"]
        self.llm = LLM(**args)
        self.block_size = self.llm.llm_engine.vllm_config.cache_config.block_size

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        from vllm import SamplingParams

        inputs = [{"prompt_token_ids": encode(self.tokenizer, p)} for p in prompts]
        params = [SamplingParams(**_sampling_kwargs(sampling), seed=seed) for seed in seeds]
        self._warm_prefix([i["prompt_token_ids"] for i in inputs])
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [
            Completion(cut_at_stop(o.outputs[0].text, sampling.stop), o.outputs[0].finish_reason or "stop")
            for o in outputs
        ]

    def _warm_prefix(self, prompts: list[list[int]]) -> None:
        """Prefix caching only reuses blocks computed in an earlier engine step, so a batch whose
        prompts share their instructions would prefill them once per request. One step that prefills
        just the shared tokens (one token decoded) puts them in the cache first; no request of the
        batch is decoded alone. Per-request seeds keep the answers independent of it."""
        from vllm import SamplingParams

        shared = os.path.commonprefix(prompts) if self.prefix_caching and len(prompts) > 1 else []
        if len(shared) >= self.block_size:  # vLLM caches whole blocks only
            warm = SamplingParams(max_tokens=1, temperature=0.0)
            self.llm.generate([{"prompt_token_ids": shared}], warm, lora_request=self.lora, use_tqdm=False)

    def score(self, prompts: list[str], targets: list[str]) -> list[float]:
        """The log-probability of each target right after its prompt, from vLLM's prompt log-probabilities
        (the prompt token's own log-probability is always among them)."""
        from vllm import SamplingParams

        prompt_ids = [encode(self.tokenizer, p) for p in prompts]
        target_ids = [target_token_ids(self.tokenizer, t) for t in targets]
        inputs = [{"prompt_token_ids": p + t} for p, t in zip(prompt_ids, target_ids)]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [
            sum(o.prompt_logprobs[len(p) + i][token].logprob for i, token in enumerate(t))
            for o, p, t in zip(outputs, prompt_ids, target_ids)
        ]

    def close(self) -> None:
        del self.llm  # ends the engine core process
        gc.collect()


class OpenAIGenerator:
    """An OpenAI-compatible completions endpoint. Prompts go as token ids, one request each with
    its own seed, `concurrency` at a time. The openai client bounds each request: a timeout
    (vllm.request_timeout) and retries with exponential backoff (vllm.max_retries) for connection
    errors, timeouts, 429 and 5xx answers; what still fails becomes one TeacherError."""

    def __init__(
        self,
        url: str,
        api_key: str,
        model_path: Path,
        served_model: str | None,
        options: dict,
        socket: Path | None = None,
    ):
        import httpx
        from openai import OpenAI

        self.name = f"unix:{socket}" if socket else url
        self.tokenizer = load_tokenizer(model_path, bool(options.get("trust_remote_code")))
        self.timeout, self.retries = options.get("request_timeout", 600), options.get("max_retries", 3)
        # the openai client's own retries and timeouts apply on either transport
        http_client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) if socket else None
        self.client = OpenAI(
            base_url=url, api_key=api_key, timeout=self.timeout, max_retries=self.retries, http_client=http_client
        )
        self.pool = ThreadPoolExecutor(options.get("concurrency", 32))
        self.model = self._check_served(model_path, served_model)

    def _check_served(self, model_path: Path, served_model: str | None) -> str:
        """The served model's name, checked against the local folder whose fingerprint keys the cache:
        the server must list it and, where it says what it loaded (vLLM's `root`), have loaded a folder
        of the same name. Otherwise another model's answers would be cached as this one's."""
        served = self._call(lambda: list(self.client.models.list().data))
        names = [m.id for m in served]
        chosen = next((m for m in served if m.id == served_model), None) if served_model else (served or [None])[0]
        if chosen is None:
            raise TeacherError(
                f"the teacher server {self.name} serves no model named {served_model!r} (it serves {names}); "
                f"set teacher.served_model to one of them"
            )
        root = (chosen.model_extra or {}).get("root")
        if root and Path(root).name != model_path.name and Path(root).resolve() != model_path.resolve():
            raise TeacherError(
                f"the teacher server {self.name} serves {chosen.id!r} loaded from {root}, but teacher.model is "
                f"{model_path}, whose fingerprint keys the generation cache; point teacher.model at a copy of "
                f"the folder the server loaded"
            )
        return chosen.id

    def _call(self, request):
        import openai

        attempts = (
            f"{self.retries + 1} attempt(s) (vllm.max_retries={self.retries}, vllm.request_timeout={self.timeout:g} s)"
        )
        try:
            return request()
        except openai.APITimeoutError:
            raise TeacherError(
                f"the teacher server {self.name} did not answer within {self.timeout:g} s, {attempts}"
            ) from None
        except openai.APIConnectionError as e:
            raise TeacherError(
                f"the teacher server {self.name} cannot be reached ({e.__cause__ or e}), {attempts}"
            ) from None
        except openai.APIStatusError as e:
            retried = f", {attempts}" if e.status_code in (408, 409, 429) or e.status_code >= 500 else ""
            raise TeacherError(
                f"the teacher server {self.name} answered HTTP {e.status_code}: {str(e.message)[:200]}{retried}"
            ) from None
        except (AttributeError, IndexError, TypeError, ValueError, openai.APIResponseValidationError) as e:
            raise TeacherError(
                f"the teacher server {self.name} sent something that is not an OpenAI completion "
                f"({type(e).__name__}: {e})"[:400]
            ) from None

    def _one(self, prompt: str, sampling: SamplingConfig, seed: int) -> Completion:
        def request():
            response = self.client.completions.create(
                model=self.model,
                prompt=encode(self.tokenizer, prompt),
                seed=seed,
                extra_body=SERVER_NEUTRAL,
                **_sampling_kwargs(sampling),
            )
            text = response.choices[0].text
            if not isinstance(text, str):
                raise TypeError(f"choices[0].text is {type(text).__name__}")
            return Completion(text, response.choices[0].finish_reason or "stop")

        completion = self._call(request)
        return completion._replace(text=cut_at_stop(completion.text, sampling.stop))

    def generate_each(
        self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]
    ) -> Iterator[tuple[int, Completion]]:
        """(index, answer) as each request completes. After the first failure no new request
        starts; the ones in flight finish (their answers still come out), then the error is raised."""
        failed = threading.Event()

        def one(prompt: str, seed: int) -> Completion | None:
            if failed.is_set():  # a worker freed by the failure must not start another request
                return None
            try:
                return self._one(prompt, sampling, seed)
            except BaseException:
                failed.set()
                raise

        futures = {self.pool.submit(one, p, s): i for i, (p, s) in enumerate(zip(prompts, seeds))}
        failure = None
        for future in as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is None:
                if future.result() is not None:
                    yield futures[future], future.result()
            elif failure is None:
                failure = future.exception()
                for pending in futures:
                    pending.cancel()
        if failure is not None:
            raise failure

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        answers = dict(self.generate_each(prompts, sampling, seeds))
        return [answers[i] for i in range(len(prompts))]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.client.close()


def generate_each(
    engine: Generator, prompts: list[str], sampling: SamplingConfig, seeds: list[int]
) -> Iterator[tuple[int, Completion]]:
    """(index, answer) pairs: as each request completes for a server, per batch for the others."""
    if hasattr(engine, "generate_each"):
        yield from engine.generate_each(prompts, sampling, seeds)
    else:
        yield from enumerate(engine.generate(prompts, sampling, seeds))


@contextmanager
def open_engine(spec: EngineSpec, workload: tuple[list[str], int] | None = None) -> Iterator[Generator]:
    """The engine a spec describes, closed (and its server stopped) on exit. workload: the largest
    batch's prompts and the answer budget, which an offline vLLM engine on a CPU sizes its KV cache by."""
    if spec.kind == "transformers":
        engine = TransformersGenerator(spec.model, spec.adapter, spec.vllm)
    elif spec.kind == "vllm":
        engine = VLLMGenerator(spec.model, spec.adapter, spec.vllm, workload)
    elif spec.kind == "openai":
        engine = OpenAIGenerator(spec.url, spec.api_key, spec.model, spec.served_model, spec.vllm, spec.socket)
    elif spec.kind == "vllm-server":
        with VLLMServer(spec.model, spec.vllm, spec.server_log) as server:
            try:
                engine = OpenAIGenerator(
                    server.url, server.api_key, spec.model, server.served_model, spec.vllm, server.socket
                )
                try:
                    yield engine
                finally:
                    engine.close()
            except TeacherError as e:
                if server.proc.poll() is not None:
                    raise TeacherError(
                        f"{e}; the vLLM server llm2llm started for this phase exited with code "
                        f"{server.proc.returncode}, see {server.log_path}"
                    ) from None
                raise
        return
    else:
        raise ValueError(f"unknown engine {spec.kind!r}")
    try:
        yield engine
    finally:
        engine.close()
