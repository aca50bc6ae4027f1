"""`llm2llm export RUN --output DIR`: what a user came for, out of a finished run directory.

    DIR/data/     the selected iteration's training set: a `datasets` save_to_disk folder (dataset/),
                  train.parquet, train.jsonl and a dataset card (README.md) with each example's origin
    DIR/model/    the selected student as a plain model folder (a LoRA student merged into its base,
                  or the adapter with its base named: --lora adapter) and a model card (README.md)
    DIR/config.yaml   the run's resolved config (`llm2llm boost --profile config.yaml` reruns it)

The selected iteration is the one best on validation (llm2llm/selection.py), never chosen on test.
Everything is built in a hidden sibling folder and renamed into place: DIR is complete or absent.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import yaml

from llm2llm.errors import UserError
from llm2llm.report import DROP_REASONS, selected_student
from llm2llm.store import atomic_dir, read_json, read_jsonl

LORA_MODES = ("merge", "adapter")
# Columns every exported example has, whatever the task's own fields (the rest follow).
PROVENANCE = ("source", "parent_id", "iteration", "teacher", "teacher_fingerprint")


def finished_run(run: Path) -> dict:
    """metrics.json of a run whose every planned iteration is scored; else a one-line error."""
    path = run / "metrics.json"
    if not path.exists():
        raise UserError(f"{path} not found: {run} is not a run directory with a finished iteration")
    metrics = read_json(path)
    planned = metrics["iterations_planned"] + 1
    done = [it["iteration"] for it in metrics["iterations"]]
    if not metrics.get("complete") or not (run / f"iter_{planned - 1:03d}" / "scores.json").exists():
        raise UserError(
            f"{run} is not finished ({len(done)} of {planned} iterations scored); rerun its `llm2llm boost` "
            "command to finish it, then export"
        )
    return metrics


def export_run(run: Path, output: Path, lora: str = "merge", model: bool = True, iteration: int | None = None) -> Path:
    """Write DIR (see the module docstring) from the finished run directory `run`: the iteration
    selected on validation, or `iteration` where the user names one (the cards say so)."""
    run, output = Path(run), Path(output)
    metrics = finished_run(run)
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} exists and is not empty; choose a new --output or remove it")
    selected = metrics.get("selected") or selected_student(metrics["iterations"])
    if iteration is not None and iteration != selected["iteration"]:
        if not 0 <= iteration < len(metrics["iterations"]):
            raise UserError(f"--iteration {iteration}: {run} has iterations 0 to {len(metrics['iterations']) - 1}")
        chosen = metrics["iterations"][iteration]
        selected = {
            "iteration": iteration,
            "rule": f"the user's choice (--iteration {iteration}; validation selects {selected['iteration']})",
            "validation_accuracy": chosen.get("validation_accuracy"),
            "test_accuracy": chosen["test_accuracy"],
            "student": f"iter_{iteration:03d}/student",
        }
    student = run / selected["student"]
    if model and not (student / "config.json").exists() and not (student / "adapter_config.json").exists():
        raise UserError(
            f"{student} is not on disk (the run pruned it, or it was removed); export the data alone with "
            "--no-model, or rerun the run with --set loop.keep_checkpoints=true"
        )
    examples = dataset_rows(run, metrics, selected["iteration"])
    with atomic_dir(output) as tmp:
        shutil.copyfile(run / "config.yaml", tmp / "config.yaml")
        write_dataset(tmp / "data", examples, metrics, selected)
        if model:
            write_model(tmp / "model", student, run, metrics, selected, lora)
    return output


def dataset_rows(run: Path, metrics: dict, iteration: int) -> list[dict]:
    """The training set of `iteration`, each example with where it came from (PROVENANCE first)."""
    seed_ids = set(read_json(run / "seed_ids.json"))
    rows = []
    for ex in read_jsonl(run / f"iter_{iteration:03d}" / "train.jsonl"):
        seed = ex["id"] in seed_ids
        row = {
            "source": "seed" if seed else metrics["method"],
            "parent_id": ex.get("parent_id"),
            "iteration": ex.get("iteration"),
            "teacher": ex.get("teacher"),
            "teacher_fingerprint": ex.get("teacher_fingerprint"),
        }
        rows.append({**{k: v for k, v in ex.items() if k not in row}, **row})
    return rows


def write_dataset(out: Path, rows: list[dict], metrics: dict, selected: dict) -> None:
    from datasets import Dataset

    out.mkdir()
    dataset = Dataset.from_list(rows)
    dataset.save_to_disk(str(out / "dataset"))
    dataset.to_parquet(str(out / "train.parquet"))
    dataset.to_json(str(out / "train.jsonl"), lines=True, force_ascii=False)
    (out / "README.md").write_text(dataset_card(rows, metrics, selected), encoding="utf-8")


def _filter_counts(metrics: dict, upto: int) -> list[str]:
    """Per iteration whose examples are in the exported set: generated, kept, dropped per reason."""
    lines = [
        "| iteration | generated | kept | " + " | ".join(DROP_REASONS) + " |",
        "|---" * (3 + len(DROP_REASONS)) + "|",
    ]
    for it in metrics["iterations"]:
        if it["iteration"] < upto and it["generated"] is not None:
            dropped = " | ".join(str(it["dropped"].get(r, 0)) for r in DROP_REASONS)
            lines.append(f"| {it['iteration']} | {it['generated']} | {it['kept']} | {dropped} |")
    return lines


def _reproduce(metrics: dict) -> str:
    return f"llm2llm boost --profile EXPORT/config.yaml --run {metrics['run']}-again"


def dataset_card(rows: list[dict], metrics: dict, selected: dict) -> str:
    sources = Counter(row["source"] for row in rows)
    header = {
        "pretty_name": f"{metrics['task']} boosted by {metrics['method']} (run {metrics['run']})",
        "size_categories": ["n<1K"] if len(rows) < 1000 else ["1K<n<10K"],
        "task_categories": ["text-classification"]
        if metrics["task_type"] == "classification"
        else ["text-generation"],
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {header['pretty_name']}",
        "",
        f"The training set of iteration {selected['iteration']} of the llm2llm run `{metrics['run']}`: the iteration "
        f"selected by {selected['rule']} (test accuracy is never used to choose).",
        "",
        f"- task: {metrics['task']} ({metrics['task_type']}); method: {metrics['method']}; "
        f"data seed {metrics['data_seed']}",
        f"- examples: {len(rows)} ("
        + ", ".join(f"{n} {source}" for source, n in sorted(sources.items(), key=lambda kv: kv[0] != "seed"))
        + ")",
        f"- teacher: `{metrics['teacher']}`, fingerprint {metrics.get('teacher_fingerprint')}; "
        f"{metrics['teacher_style']} prompts",
        f"- student: `{metrics['student']}`, fingerprint {metrics.get('student_fingerprint')}",
        f"- made by `llm2llm boost` (config.yaml beside this folder is the run's whole config; "
        f"`{_reproduce(metrics)}` reruns it)",
        "",
        "## Columns",
        "",
        "- `source`: `seed` (one of the labelled seed examples) or the method that wrote the example",
        "- `parent_id`: the seed example a generated example was written for (the one the student got wrong)",
        "- `iteration`: the iteration whose teacher call wrote it",
        "- `teacher`, `teacher_fingerprint`: the model that wrote it (null for seed and EDA examples)",
        "- the task's own fields: " + ", ".join(f"`{k}`" for k in rows[0] if k not in PROVENANCE),
        "",
        "## Filter decisions (the candidates behind the generated examples)",
        "",
        *_filter_counts(metrics, selected["iteration"]),
        "",
        "Files: `dataset/` (`datasets.load_from_disk`), `train.parquet`, `train.jsonl`.",
        "",
    ]
    return "\n".join(lines)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the run and DIR share a file system (a 14 GB checkpoint costs nothing), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_model(out: Path, student: Path, run: Path, metrics: dict, selected: dict, lora: str) -> None:
    models = read_json(run / "models.json")
    adapter = (student / "adapter_config.json").exists()
    ignore = shutil.ignore_patterns("train_log.json", "training_args.bin", "checkpoint-*")
    if adapter and lora == "merge":
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer

        merged = AutoPeftModelForCausalLM.from_pretrained(student).merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(student).save_pretrained(out)
        form = f"LoRA adapter merged into its base `{models['student']['name']}`"
    else:
        shutil.copytree(student, out, ignore=ignore, copy_function=_link_or_copy)
        form = (
            f"LoRA adapter; load it on its base `{models['student']['name']}` ({models['student']['path']}, "
            f"fingerprint {models['student']['fingerprint']})"
            if adapter
            else "full fine-tune"
        )
    (out / "README.md").write_text(model_card(metrics, selected, models, form), encoding="utf-8")


def model_card(metrics: dict, selected: dict, models: dict, form: str) -> str:
    header = {"base_model": models["student"]["name"], "library_name": "transformers", "tags": ["llm2llm"]}
    rows = [
        f"| {it['iteration']} | {it['train_size']} | "
        + ("-" if it.get("validation_accuracy") is None else f"{100 * it['validation_accuracy']:.1f}")
        + f" | {100 * it['test_accuracy']:.1f} | {'yes' if it['iteration'] == selected['iteration'] else ''} |"
        for it in metrics["iterations"]
    ]
    return "\n".join(
        [
            "---",
            yaml.safe_dump(header, sort_keys=False).strip(),
            "---",
            "",
            f"# {metrics['student']} boosted on {metrics['task']} (llm2llm run `{metrics['run']}`)",
            "",
            f"The student of iteration {selected['iteration']}, selected by {selected['rule']}; {form}.",
            "",
            f"- base model: `{models['student']['name']}` ({models['student']['path']}, fingerprint "
            f"{models['student']['fingerprint']})",
            f"- data: ../data/ (the training set of iteration {selected['iteration']}: "
            f"{metrics['iterations'][selected['iteration']]['train_size']} examples), method {metrics['method']}, "
            f"teacher `{metrics['teacher']}` (fingerprint {metrics.get('teacher_fingerprint')})",
            f"- evaluation: {metrics['evaluation']} decoding, exact answer match; iteration 0 is plain fine-tuning",
            f"- config: ../config.yaml (`{_reproduce(metrics)}` reruns the run)",
            "",
            "| iteration | train size | validation acc (%) | test acc (%) | selected |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
