"""Fine-tune the student with the HF Trainer: loss on answer tokens only, full weights or LoRA,
optionally under DeepSpeed ZeRO.

The training phase runs as `torchrun ... -m llm2llm.training REQUEST` (llm2llm/runtime/runner.py
training_command builds it from the GPU plan); every rank runs `train_student`, rank 0 saves. The saved
folder loads directly in the evaluation engines: a full model folder (ZeRO-3 shards gathered on
save), or a LoRA adapter folder whose base is recorded in adapter_config.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm2llm.config import TrainConfig, deepspeed_config_path
from llm2llm.engines import encode, load_tokenizer, render_chat
from llm2llm.store import atomic_write_json, fsync_dir, fsync_tree, read_json
from llm2llm.tasks import TASK_TYPES, Task

log = logging.getLogger(__name__)


@dataclass
class TrainRequest:
    """What the parent hands the training processes: a JSON file beside the iteration folder (no pickle, which
    would run code for anyone able to write there)."""

    base_path: Path
    examples: list[dict]
    task: Task
    config: TrainConfig
    out_dir: Path
    init_path: Path | None = None
    loading: dict = field(default_factory=dict)  # the student's opt-ins: trust_remote_code, allow_pickle_weights
    tb_dir: Path | None = None  # where this training's TensorBoard log goes (runs/<run>/tb/iter_NNN)


def tokenize_example(tokenizer, task: Task, example: dict, max_length: int) -> dict:
    prompt_ids = encode(tokenizer, render_chat(tokenizer, task.prompt(example)))
    answer_ids = tokenizer(task.target(example) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)) :]  # cut long prompts from the left
    return {
        "input_ids": prompt_ids + answer_ids,
        "attention_mask": [1] * (len(prompt_ids) + len(answer_ids)),
        "labels": [-100] * len(prompt_ids) + answer_ids,
    }


def _load_model(request: TrainRequest, dtype):
    from transformers import AutoModelForCausalLM

    cfg, init = request.config, request.init_path
    if cfg.lora and init is not None and (init / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(init, is_trainable=True, dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(
        init or request.base_path,
        dtype=dtype,
        trust_remote_code=request.loading.get("trust_remote_code", False),
        use_safetensors=None if request.loading.get("allow_pickle_weights") else True,
    )
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def train_student(request: TrainRequest) -> Path:
    """Every rank runs this. Trains on the request's examples from `init_path` (a previous student)
    or the base checkpoint; rank 0 saves the student to `out_dir` in one atomic rename."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, set_seed

    cfg, out_dir = request.config, Path(request.out_dir)
    set_seed(cfg.seed)
    on_gpu = torch.cuda.is_available()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    checkpoints = out_dir.with_name(f"{out_dir.name}-checkpoints")  # not a .tmp: a rerun resumes from it
    if cfg.deepspeed:
        _init_deepspeed(cfg, on_gpu)
    # The arguments come first: with ZeRO-3 they make from_pretrained load the weights partitioned
    # (zero.Init) instead of a full copy per rank. They also start the process group.
    args = training_arguments(cfg, checkpoints, on_gpu)
    with args.main_process_first(desc="clear the temporary student folder"):
        if args.process_index == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
    tokenizer = load_tokenizer(request.base_path, request.loading.get("trust_remote_code", False))
    tokenizer.padding_side = "right"
    model = _load_model(request, torch.float32)  # fp32 master weights; bf16 compute on GPU (args.bf16)
    dataset = Dataset.from_list(
        [tokenize_example(tokenizer, request.task, e, cfg.max_length) for e in request.examples]
    )
    callbacks = _tensorboard(request, tmp / "trainer" / "tb") if args.process_index == 0 else []
    checkpointing = checkpoint_callback(cfg.checkpoint_minutes * 60)
    callbacks.append(checkpointing)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=callbacks,
    )
    resume = last_checkpoint(checkpoints, request, args)
    loop_start = time.time()
    with checkpointing.on_stop():
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if checkpointing.stopped:  # SIGTERM: the steps so far are in a checkpoint, nothing is handed over
        log.info("stopped by SIGTERM after step %d, saved in %s for the rerun", trainer.state.global_step, checkpoints)
        raise SystemExit(143)
    loop_end = time.time()
    # Collective under ZeRO-3 (the shards are gathered); only the main process writes.
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(tmp)
        _keep_tensorboard(request, tmp)
        record = train_record(request, trainer, result, dataset, resume, checkpointing.steps)
        # where rank 0's time went: imports, process group, model load, tokenization; the loop; saving
        times = (loop_start - _process_start(), loop_end - loop_start, time.time() - loop_end)
        record["seconds"] = dict(zip(("before_training", "training", "saving"), (round(t, 2) for t in times)))
        (tmp / "train_log.json").write_text(json.dumps(record, indent=2))
        _hand_over(tmp, out_dir, checkpoints)
        loss = result.metrics.get("train_loss", float("nan"))
        log.info("trained on %d examples with %d process(es): loss %.4f", len(dataset), args.world_size, loss)
    trainer.accelerator.wait_for_everyone()
    return out_dir


def _init_deepspeed(cfg: TrainConfig, on_gpu: bool) -> None:
    """DeepSpeed's own process group must exist before ZeRO-3 partitions the weights at load time
    (accelerate starts it on GPUs, not with use_cpu); a no-op when it is already up."""
    from datetime import timedelta

    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", timeout=timedelta(seconds=cfg.ddp_timeout))


def training_arguments(cfg: TrainConfig, checkpoints: Path, on_gpu: bool):
    """The Trainer's arguments from the run's train section."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(checkpoints),  # where the resumable checkpoints go (save_total_limit: the last one)
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a fraction of the steps
        weight_decay=cfg.weight_decay,
        logging_steps=1,
        save_strategy="steps" if cfg.checkpoint_steps else "no",  # by time: CheckpointByTime
        save_steps=cfg.checkpoint_steps or 500,
        save_total_limit=1,
        save_only_model=False,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not on_gpu,  # DeepSpeed on CPU needs this (else its batch-size check fails)
        bf16=on_gpu,
        gradient_checkpointing=cfg.gradient_checkpointing,
        # non-reentrant checkpointing also works when the inputs need no gradient (a frozen base under LoRA)
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        deepspeed=str(deepspeed_config_path(cfg.deepspeed)) if cfg.deepspeed else None,
        ddp_timeout=cfg.ddp_timeout,
        ddp_find_unused_parameters=False,  # every trainable parameter is used in a causal LM's forward
        dataloader_num_workers=0,
    )


def _keep_tensorboard(request: TrainRequest, tmp: Path) -> None:
    """The Trainer pickles its arguments beside the weights (torch.save); a run folder holds no
    pickle: they go in train_log.json instead. The finished attempt's TensorBoard log replaces a
    killed attempt's: one TensorBoard run per iteration."""
    (tmp / "training_args.bin").unlink(missing_ok=True)
    if request.tb_dir is not None and (tmp / "trainer" / "tb").exists():
        request.tb_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(request.tb_dir, ignore_errors=True)
        os.replace(tmp / "trainer" / "tb", request.tb_dir)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)


def train_record(request: TrainRequest, trainer, result, dataset, resume: Path | None, steps: int) -> dict:
    """train_log.json: the Trainer's metrics and log, and what throughput and MFU need (bench/gpu_check.py),
    counted after the loop: tokens without padding, all parameters (ZeRO-3 keeps each one's full size
    in ds_numel)."""
    args, cfg = trainer.args, request.config
    return {
        "metrics": result.metrics,
        "log_history": trainer.state.log_history,
        "examples": len(dataset),
        "tokens_per_epoch": sum(len(ids) for ids in dataset["input_ids"]),
        "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters()),
        "world_size": args.world_size,
        "bf16": args.bf16,
        "deepspeed": cfg.deepspeed,
        "lora": cfg.lora,
        "gradient_checkpointing": args.gradient_checkpointing,
        "training_args": json.loads(args.to_json_string()),
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else None,
        "steps_this_attempt": steps,
        "base_model": str(request.base_path),
        "init_from": str(request.init_path) if request.init_path else None,
    }


def _hand_over(tmp: Path, out_dir: Path, checkpoints: Path) -> None:
    """The saved student becomes out_dir in one rename, durable first (its cost lands in this
    phase); the resumable checkpoints go, since nothing is left to resume."""
    fsync_tree(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    fsync_dir(out_dir.parent)
    shutil.rmtree(checkpoints, ignore_errors=True)


def request_digest(request: TrainRequest) -> str:
    """What a resumable checkpoint belongs to: the examples, the recipe, the starting weights."""
    payload = {
        "examples": request.examples,
        "config": request.config.model_dump(mode="json", exclude={"checkpoint_minutes", "checkpoint_steps"}),
        # the folders themselves, however the command spelt them (relative, through a symlink)
        "base": str(Path(request.base_path).resolve()),
        "init": str(Path(request.init_path).resolve()) if request.init_path else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def last_checkpoint(folder: Path, request: TrainRequest, args) -> Path | None:
    """The newest complete checkpoint of this very training in `folder`, or None. A folder made for
    another training (other examples or recipe, e.g. data edited between a kill and the rerun) is cleared."""
    from transformers.trainer_utils import get_last_checkpoint

    digest, stamp = request_digest(request), folder / "request.sha256"
    with args.main_process_first(desc="check the resumable checkpoints"):
        if args.process_index == 0:
            if folder.is_dir() and (not stamp.exists() or stamp.read_text().strip() != digest):
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            stamp.write_text(digest + "\n")
    # A checkpoint is complete once its trainer_state.json is written (the Trainer writes it last); one
    # cut off by the kill is removed, and the newest complete one (save_total_limit keeps it until the
    # next is whole) is resumed from.
    with args.main_process_first(desc="drop an incomplete checkpoint"):
        while (last := get_last_checkpoint(str(folder))) and not (Path(last) / "trainer_state.json").exists():
            if args.process_index != 0:
                break
            log.info("removing %s, cut off while it was saved", last)
            shutil.rmtree(last)
    last = get_last_checkpoint(str(folder))
    if last and (Path(last) / "trainer_state.json").exists():
        log.info("resuming the training from %s", last)
        return Path(last)
    return None


def checkpoint_callback(seconds: float):
    """A TrainerCallback that asks for a resumable checkpoint once `seconds` (0: never) have passed
    since the last one, and at the end of the step during which the phase was sent SIGTERM (a
    preemption, Slurm's time-limit warning, a Ctrl-C of the run), after which training stops; and
    deletes the pickled training_args.bin the Trainer puts in each (nothing reads it on resume).
    Rank 0 decides for every rank: saving is collective under ZeRO-3."""
    import contextlib
    import signal

    from transformers import TrainerCallback

    class CheckpointByTime(TrainerCallback):
        def __init__(self):
            self.last = time.monotonic()
            self.steps = 0  # optimizer steps taken by this process (after a resume: only the remaining ones)
            self.term = False  # SIGTERM arrived (this process)
            self.stopped = False  # training stopped for it, after a checkpoint (every rank)

        @contextlib.contextmanager
        def on_stop(self):
            """While training, SIGTERM finishes the step, saves and stops instead of ending the process
            at once (the phase's runner allows a grace period before SIGKILL: phases._terminate)."""
            previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "term", True))
            try:
                yield
            finally:
                signal.signal(signal.SIGTERM, previous)

        def on_step_end(self, args, state, control, **kwargs):
            import torch
            import torch.distributed as dist

            self.steps += 1
            due = bool(seconds) and time.monotonic() - self.last >= seconds
            flags = [int(due), int(self.term)]
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                shared = torch.tensor(flags, device=args.device)
                dist.broadcast(shared, src=0)
                flags = shared.tolist()
            due, self.stopped = bool(flags[0]), bool(flags[1])
            if due or self.stopped:
                control.should_save = True
            if self.stopped:
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()
            if state.is_world_process_zero:
                for stale in Path(args.output_dir).glob("checkpoint-*/training_args.bin"):
                    stale.unlink(missing_ok=True)
            return control

    return CheckpointByTime()


def _tensorboard(request: TrainRequest, log_dir: Path) -> list:
    """The Trainer's own TensorBoard callback writing to log_dir (loss, learning rate, grad norm per
    step); none when the run turned it off or the tensorboard package is missing."""
    import importlib.util

    if request.tb_dir is None or importlib.util.find_spec("tensorboard") is None:
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(str(log_dir)))]


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def write_request(request: TrainRequest, path: Path) -> None:
    """The request as JSON: paths as strings, the task as its type, name, spec and labels, the config as its fields."""
    task = request.task
    payload = {
        "base_path": str(request.base_path),
        "examples": request.examples,
        "task": {"type": task.type, "name": task.name, "spec": task.spec, "labels": list(task.labels)},
        "config": request.config.model_dump(mode="json"),
        "out_dir": str(request.out_dir),
        "init_path": None if request.init_path is None else str(request.init_path),
        "loading": request.loading,
        "tb_dir": None if request.tb_dir is None else str(request.tb_dir),
    }
    atomic_write_json(path, payload)


def read_request(path: Path) -> TrainRequest:
    payload = read_json(path)
    task = payload["task"]
    return TrainRequest(
        base_path=Path(payload["base_path"]),
        examples=payload["examples"],
        task=TASK_TYPES[task["type"]](name=task["name"], spec=task["spec"], labels=task["labels"]),
        config=TrainConfig(**payload["config"]),
        out_dir=Path(payload["out_dir"]),
        init_path=_optional_path(payload["init_path"]),
        loading=payload["loading"],
        tb_dir=_optional_path(payload["tb_dir"]),
    )


def train_from_file(path: Path) -> Path:
    """Train what a request file (write_request) asks for: a training rank's work, or the whole
    training in one phase process (PhaseRunner.train's train_here)."""
    return train_student(read_request(Path(path)))


def main(argv: list[str]) -> int:
    """Entry point of every training rank: `python -m llm2llm.training REQUEST.json`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_from_file(Path(argv[0]))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
