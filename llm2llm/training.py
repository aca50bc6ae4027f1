"""Fine-tune the student with the HF Trainer: loss on answer tokens only, full weights or LoRA.

The saved folder loads directly in the evaluation engines: a full model folder, or a LoRA
adapter folder whose base is recorded in adapter_config.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llm2llm.config import TrainConfig
from llm2llm.engines import encode, load_tokenizer, render_chat
from llm2llm.store import atomic_dir
from llm2llm.tasks import Task

log = logging.getLogger(__name__)


def tokenize_example(tokenizer, task: Task, example: dict, max_length: int) -> dict:
    prompt_ids = encode(tokenizer, render_chat(tokenizer, task.prompt(example)))
    answer_ids = tokenizer(task.target(example) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)):]  # cut long prompts from the left
    return {
        "input_ids": prompt_ids + answer_ids,
        "attention_mask": [1] * (len(prompt_ids) + len(answer_ids)),
        "labels": [-100] * len(prompt_ids) + answer_ids,
    }


def train_student(
    base_path: Path, examples: list[dict], task: Task, cfg: TrainConfig, out_dir: Path, init_path: Path | None = None
) -> Path:
    """Train on `examples` starting from `init_path` (a previous student) or the base checkpoint,
    and save the student to `out_dir` in one atomic rename."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(cfg.seed)
    on_gpu = torch.cuda.is_available()
    start = init_path or base_path
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "right"
    if cfg.lora and init_path is not None and (init_path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(init_path, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32, trust_remote_code=False)
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM",
            ))
    dataset = Dataset.from_list([tokenize_example(tokenizer, task, ex, cfg.max_length) for ex in examples])

    with atomic_dir(out_dir) as tmp:
        args = TrainingArguments(
            output_dir=str(tmp / "trainer"),
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=cfg.warmup_ratio,  # a float < 1 is a fraction of the steps
            weight_decay=cfg.weight_decay,
            logging_steps=max(1, len(dataset) // (cfg.batch_size * cfg.grad_accum * 2) or 1),
            save_strategy="no",
            report_to=[],
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=not on_gpu,
            bf16=on_gpu,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        )
        result = trainer.train()
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "train_log.json").write_text(json.dumps(
            {"metrics": result.metrics, "log_history": trainer.state.log_history, "examples": len(dataset),
             "base_model": str(base_path), "init_from": str(init_path) if init_path else None}, indent=2))
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
    log.info("trained on %d examples: loss %.4f", len(dataset), result.metrics.get("train_loss", float("nan")))
    return out_dir
