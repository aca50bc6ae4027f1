"""One training configuration of the GPU check (bench/gpu_check.py starts it under torchrun, once per
ZeRO stage and gradient-checkpointing setting): a random-init Llama-shaped student trained by the HF
Trainer with the repository's DeepSpeed preset on random tokens, and what only a GPU can say about it:

  train       tokens/s per GPU over the timed steps (the first two are warm-up), MFU against the GPU's
              bf16 peak, torch.cuda.max_memory_allocated against the GPU plan's estimate for the shape
  round_trip  (--round-trip) greedy answers of the trained student, gathered in place, equal to those
              of the folder `save_model` writes (ZeRO-3 gathers the 16-bit weights) loaded back
  load        disk-to-device load of that folder: GB/s (the file was just written: the page cache)

Each figure is appended to OUT/figures.jsonl (flushed and synced) the moment it exists, so a check cut
off by its time limit still returns what it measured. On a CPU (tests/test_bench.py) the same code runs
with gloo, fp32 and the tiny shape.

    torchrun --nproc-per-node 1 bench/gpu_train.py --zero zero3 --checkpointing 1 --out DIR [--shape 1.5b]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Llama shapes: ~1.5B parameters (Qwen2.5-1.5B's width and depth, a 32k vocabulary), and one for the CPU test.
SHAPES = {
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}  # fmt: skip
WARMUP_STEPS = 2


def emit(out: Path, name: str, figures: dict) -> None:
    """One figure, durable at once: a check cut off later still returns it."""
    with open(out / "figures.jsonl", "a") as f:
        f.write(json.dumps({"figure": name, **figures}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"figure {name}: {json.dumps(figures)}", flush=True)


def step_timer():
    """A TrainerCallback that times the optimizer steps after the warm-up (the GPU synchronised)."""
    import torch
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        seconds, steps, _start = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= WARMUP_STEPS:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._start is not None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds += time.perf_counter() - self._start
                self.steps += 1
                self._start = None

    return Timer()


def plan_estimate(config, out: Path, zero: str, world: int, batch: int, seq: int, checkpointing: bool) -> float:
    """The GPU plan's per-GPU training estimate (GiB) for this shape (llm2llm/runtime/gpu_plan.py)."""
    from llm2llm.runtime.gpu_plan import Recipe, model_shape, student_train_gib

    folder = out / "shape"
    config.save_pretrained(folder)
    return student_train_gib(model_shape(str(folder)), Recipe(zero, False, batch, seq, checkpointing), world, 1)[0]


def greedy(model, prompts, new_tokens: int = 8) -> list[list[int]]:
    import torch

    with torch.inference_mode():
        out = model.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens, do_sample=False
        )
    return out[:, prompts.shape[1] :].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zero", choices=["zero2", "zero3"], required=True)
    parser.add_argument("--checkpointing", type=int, choices=[0, 1], required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.5b")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--round-trip", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainingArguments, set_seed

    from bench.gpu_check import peak_flops
    from llm2llm.config import deepspeed_config_path

    on_gpu = torch.cuda.is_available()
    set_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.zero}-{'ckpt' if args.checkpointing else 'nockpt'}"
    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=max(2048, args.seq))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # the plan's estimate before DeepSpeed's config is live (under it, a meta-device model would be partitioned)
    estimate = plan_estimate(config, args.out / name, args.zero, world, args.batch, args.seq, bool(args.checkpointing))
    # 1. The arguments first (under ZeRO-3 they make the model below be created partitioned), then the model.
    training = TrainingArguments(
        output_dir=str(args.out / name / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=bool(args.checkpointing),
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.checkpointing else None,
        deepspeed=str(deepspeed_config_path(args.zero)),
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # fp32 master weights
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    rows = torch.randint(0, config.vocab_size, (args.batch * args.steps * training.world_size, args.seq))
    data = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})
    timer = step_timer()
    trainer = Trainer(model=model, args=training, train_dataset=data, callbacks=[timer])
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()

    # 2. Training: throughput per GPU, MFU, peak memory against the plan.
    trainer.train()
    rank0 = trainer.is_world_process_zero()
    per_gpu = args.batch * args.seq * timer.steps / timer.seconds if timer.seconds else 0.0
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak = peak_flops(device)
    if rank0:
        emit(args.out, "train", {
            "config": name, "device": device, "world_size": training.world_size, "parameters": parameters,
            "batch": args.batch, "seq": args.seq, "timed_steps": timer.steps, "timed_seconds": round(timer.seconds, 3),
            "tokens_per_s_per_gpu": round(per_gpu, 1),
            # 6 FLOPs per parameter per token (forward and backward); gradient checkpointing's extra forward
            # and attention not counted, so this is the useful-work MFU
            "mfu": round(6 * parameters * per_gpu / peak, 4) if peak else None,
            "max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
            "plan_estimate_gib": round(estimate, 2),
        })  # fmt: skip
    if not args.round_trip:
        return

    # 3. The round trip: greedy answers in place (ZeRO-3: every rank gathers the weights), then from the
    # folder save_model writes, loaded back.
    import deepspeed

    prompts = torch.randint(0, config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    engine_model = trainer.model_wrapped.module if hasattr(trainer.model_wrapped, "module") else trainer.model
    engine_model.eval()
    device_of = next(engine_model.parameters()).device
    with deepspeed.zero.GatheredParameters(list(engine_model.parameters()), enabled=args.zero == "zero3"):
        before = greedy(engine_model, prompts.to(device_of))
    folder = args.out / name / "student"
    trainer.save_model(str(folder))
    if rank0:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # load the folder whole, as evaluation does, not partitioned by ZeRO-3
        dtype = next(engine_model.parameters()).dtype
        start = time.perf_counter()
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to("cuda" if on_gpu else "cpu")
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        emit(args.out, "load", {"config": name, "bytes": size, "seconds": round(seconds, 3),
                                "gb_per_s": round(size / seconds / 1e9, 2), "dtype": str(dtype)})  # fmt: skip
        after = greedy(loaded.eval(), prompts.to(loaded.device))
        emit(args.out, "round_trip", {"config": name, "dtype": str(dtype), "equal": before == after,
                                      "differing_prompts": sum(a != b for a, b in zip(before, after))})  # fmt: skip


if __name__ == "__main__":
    main()
