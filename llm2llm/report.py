"""metrics.json, report.md and accuracy.png, derived from the run directory alone."""

from __future__ import annotations

import resource
from collections import Counter
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.filtering import RougeIndex, rouge_tokens
from llm2llm.intervals import wilson_interval
from llm2llm.report_html import asked_note, option_names, render_report_html
from llm2llm.selection import select_iteration, split_accuracy
from llm2llm.store import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, read_jsonl

PHASES = ("train", "evaluate", "generate", "filter", "merge", "report")
DROP_REASONS = ("unparsable", "truncated", "invalid", "label_mismatch", "duplicate", "near_duplicate", "test_overlap")


def engine_seconds(it_dir) -> dict[str, float]:
    """Time spent inside the engines in an iteration: the Trainer's training loop (train_runtime),
    and for evaluation and generation the time from the engine being ready to the last answer
    stored (the last attempt of each). Process start, imports, model loading and saving are not in it."""
    out = {}
    if (it_dir / "train_log.json").exists():
        out["train"] = round(read_json(it_dir / "train_log.json")["metrics"].get("train_runtime", 0.0), 2)
    for phase, name in (("evaluate", "eval_stats.json"), ("generate", "teacher_stats.json")):
        if (it_dir / name).exists():
            out[phase] = read_json(it_dir / name)["generate_seconds"]
    return out


def time_split(iteration: dict, phases: list[dict]) -> dict[str, float]:
    """An iteration's wall time (its phases' timings) split three ways: inside the engines; the rest
    of the phase processes' lives (start, imports, model load, engine start-up, saving, exit); and
    llm2llm's own work in the driver (data, prompts, filter, merge, report, release checks)."""
    wall = sum(iteration["phase_seconds"].values())
    suffix = f" iter_{iteration['iteration']:03d}"
    processes = sum(p["seconds"] for p in phases if p["key"].endswith(suffix))
    engines = sum(iteration.get("engine_seconds", {}).values())
    return {
        "wall": round(wall, 2),
        "engines": round(engines, 2),
        "process_other": round(processes - engines, 2),
        "driver": round(wall - processes, 2),
    }


def seed_evaluation(config) -> str:
    """How the seed examples were judged (step 2), in words."""
    seed_eval = config.seed_eval
    if seed_eval.temperature == 0:
        return "greedy, one answer per seed example"
    how = f"sampled at T={seed_eval.temperature:g}, top_p {seed_eval.top_p:g}"
    if seed_eval.samples == 1:
        return how + ", one answer per seed example"
    return how + f", {seed_eval.samples} answers per seed example, wrong if {seed_eval.wrong_if} of them are wrong"


def recipe_variant(config) -> list[str]:
    """The loop's ablation switches and the teacher's options that are on: `llm2llm compare` gives such
    runs a cell of their own."""
    teacher = config.teacher
    switches = {
        "continued": config.loop.continue_training,
        "augment synthetic": config.loop.augment_synthetic,
        "contrast": teacher.contrast and config.loop.method in ("llm2llm", "one-shot"),
        "diversity": teacher.diversity and config.loop.method in ("llm2llm", "one-shot"),
        f"show seed {teacher.show_seed}": bool(teacher.show_seed) and config.loop.method in ("llm2llm", "one-shot"),
        "label check": teacher.label_check and config.loop.method in ("llm2llm", "one-shot", "auggpt"),
        f"coverage {teacher.coverage}": bool(teacher.coverage) and config.loop.method == "llm2llm",
        # a budget like K, not named by its count: runs matched to another run's tokens seed by seed share a cell
        "paraphrase": bool(teacher.paraphrase) and config.loop.method == "llm2llm",
        f"allocate {teacher.allocate}": teacher.allocate != "even" and config.loop.method == "llm2llm",
        f"weakest {config.seed_eval.weakest:g} by confidence": config.seed_eval.rank_by == "confidence"
        and config.loop.method in ("llm2llm", "one-shot"),
        f"{config.seed_eval.weakest:g} at random": config.seed_eval.rank_by == "random"
        and config.loop.method in ("llm2llm", "one-shot"),
        "balanced labels": config.train.balance_labels,
    }
    return [name for name, on in switches.items() if on]


def diversity(texts: list[str]) -> dict | None:
    """How varied a set of new examples is: distinct-2 (distinct word bigrams over all bigrams; Li et al.
    2016) and the mean ROUGE-L F1 over all pairs (lower = more varied); None for fewer than 2 texts."""
    if len(texts) < 2:
        return None
    bigrams = [tuple(t[i : i + 2]) for t in map(rouge_tokens, texts) for i in range(len(t) - 1)]
    index = RougeIndex(texts)
    matrix = index.f1_matrix(index.pool)
    pairs = len(texts) * (len(texts) - 1)
    return {
        "distinct_2": round(len(set(bigrams)) / len(bigrams), 4) if bigrams else None,
        "pairwise_rouge_l": round(float((matrix.sum() - matrix.trace()) / pairs), 4),
    }


def collect_metrics(run, task, notes: list[str]) -> dict:
    """metrics.json: the run's settings, one entry per scored iteration, the teacher's tokens, the
    selected iteration, and each phase process's record."""
    config = run.config
    models = read_json(run.path / "models.json") if (run.path / "models.json").exists() else {}
    iterations = [
        iteration_entry(run, task, it_dir)
        for it_dir in sorted(run.path.glob("iter_*"))
        if (it_dir / "scores.json").exists()
    ]
    return {
        "run": config.run,
        "task": task.name,
        "task_type": task.type,
        "student": config.student.model,
        "teacher": config.teacher.model,
        "teacher_fingerprint": models.get("teacher", {}).get("fingerprint"),
        "student_fingerprint": models.get("student", {}).get("fingerprint"),
        "teacher_style": config.teacher.style,
        "engines": {"student": config.student.engine, "teacher": config.teacher.engine},
        "evaluation": "greedy"
        if config.student.eval_temperature == 0
        else f"sampled at T={config.student.eval_temperature}",
        "seed_evaluation": seed_evaluation(config),
        "seed_size": len(read_json(run.path / "seed_ids.json")),
        "method": config.loop.method,
        "variant": recipe_variant(config),
        # the counts the variant's names leave out, for the report's header
        "asked": {"per_wrong": config.teacher.per_wrong, "paraphrase": config.teacher.paraphrase},
        "data_seed": config.data.rng_seed,
        "teacher_seed": config.teacher.sampling.seed,  # runs of one data seed that differ only here are draws
        "iterations_planned": config.planned_iterations(),
        "complete": len(iterations) == config.planned_iterations() + 1,
        "teacher_tokens": sum(
            it["teacher_requests"].get("prompt_tokens", 0) + it["teacher_requests"].get("completion_tokens", 0)
            for it in iterations
            if it.get("teacher_requests")
        ),
        "wall_seconds": round(sum(sum(it["phase_seconds"].values()) for it in iterations), 1),
        # the driver process (data, prompts, filter, merge, report) since this attempt started
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "notes": notes,
        "iterations": iterations,
        "selected": selected_student(iterations),
        # iteration 0 reused from another run with the same inputs, or computed here (llm2llm/iteration0.py)
        "iteration0": read_json(run.path / "iter_000" / "shared.json")
        if (run.path / "iter_000" / "shared.json").exists()
        else None,
        "training": {"deepspeed": config.train.deepspeed, "lora": config.train.lora, "plan_mode": config.plan.mode},
        # each phase process: how long it ran, how its memory release was checked and how long that
        # took, and the switch time from the previous phase's release to its start
        "phases": read_jsonl(run.path / "phases.jsonl") if (run.path / "phases.jsonl").exists() else [],
    }


def iteration_entry(run, task, it_dir: Path) -> dict:
    """One scored iteration of metrics.json: sizes, accuracies per split, the seed evaluation, phase
    times, the teacher's requests, and what the filter kept and dropped."""
    number = int(it_dir.name.split("_")[1])
    scores = read_json(it_dir / "scores.json")
    validation = scores.get("validation")
    entry = {
        "iteration": number,
        "train_size": len(read_jsonl(it_dir / "train.jsonl")),
        "seed_accuracy": round(split_accuracy(scores, "seed"), 4),
        "seed_wrong": len(scores["seed"]["wrong_ids"]),
        "generated": None,
        "kept": None,
        "dropped": None,
        "test_accuracy": round(split_accuracy(scores, "test"), 4),
        "test_correct": scores["test"]["correct"],
        "test_total": scores["test"]["total"],
        "test_invalid": scores["test"]["invalid"],
        "validation_accuracy": round(split_accuracy(scores, "validation"), 4) if validation else None,
        "validation_total": validation["total"] if validation else None,
        "validation_correct": validation["correct"] if validation else None,
        "seed_eval": {
            k: scores["seed"][k] for k in ("samples", "sampled_answers", "sampled_correct") if k in scores["seed"]
        },
        "phase_seconds": run.phase_seconds(number),
    }
    if (it_dir / "teacher_stats.json").exists():
        entry["teacher_requests"] = read_json(it_dir / "teacher_stats.json")
    entry["engine_seconds"] = engine_seconds(it_dir)
    if (it_dir / "filter_decisions.jsonl").exists():
        decisions = read_jsonl(it_dir / "filter_decisions.jsonl")
        reasons = Counter(d["reason"] for d in decisions)
        entry.update(generated=len(decisions), kept=reasons["kept"], dropped={r: reasons[r] for r in DROP_REASONS})
        entry["diversity"] = diversity([task.key_text(d["example"]) for d in decisions if d["kept"]])
    return entry


def selected_student(iterations: list[dict]) -> dict | None:
    """The iteration whose student the run hands over (chosen on validation, llm2llm/selection.py)."""
    selection = select_iteration({it["iteration"]: it.get("validation_accuracy") for it in iterations})
    if selection is None:
        return None
    chosen = next(it for it in iterations if it["iteration"] == selection.iteration)
    return {
        "iteration": selection.iteration,
        "rule": selection.rule,
        "validation_accuracy": chosen.get("validation_accuracy"),
        "test_accuracy": chosen["test_accuracy"],
        "student": f"iter_{selection.iteration:03d}/student",
    }


def plot_accuracy(metrics: dict) -> bytes:
    """Validation and test accuracy per iteration with 95 % Wilson intervals, on a 0-100 % axis (a
    few points on 200 examples are within noise; a zoomed axis would draw them as a leap)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = metrics["iterations"]
    xs = [it["iteration"] for it in iterations]
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for split, offset in (("validation", -0.04), ("test", 0.04)):
        points = [
            (it["iteration"], it[f"{split}_correct"], it[f"{split}_total"])
            for it in iterations
            if it.get(f"{split}_total") and it.get(f"{split}_correct") is not None
        ]
        if not points:
            continue
        accs = [100 * c / n for _, c, n in points]
        intervals = [wilson_interval(c, n) for _, c, n in points]
        ax.errorbar(
            [x + offset for x, _, _ in points],
            accs,
            yerr=[
                [a - 100 * lo for a, (lo, _) in zip(accs, intervals)],
                [100 * hi - a for a, (_, hi) in zip(accs, intervals)],
            ],
            marker="o",
            capsize=3,
            label=f"{split} (n={points[0][2]}, 95 % CI)",
        )
    if iterations:
        ax.axhline(
            100 * iterations[0]["test_accuracy"], color="grey", linestyle="--", label="plain fine-tuning (test)"
        )
    selected = (metrics.get("selected") or {}).get("iteration")
    if selected is not None:
        ax.axvline(selected, color="green", alpha=0.3, linewidth=6, label=f"selected on validation ({selected})")
    ax.set_ylim(0, 100)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(xs)
    ax.set_title(f"{metrics['task']}: {metrics['seed_size']} seed examples, teacher {metrics['teacher']}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _selected_line(selected: dict | None) -> list[str]:
    if not selected:
        return []
    validation = selected.get("validation_accuracy")
    return [
        f"- selected student: iteration {selected['iteration']} (`{selected['student']}`), by {selected['rule']}"
        + (f" ({100 * validation:.1f} %)" if validation is not None else "")
        + f"; its test accuracy {100 * selected['test_accuracy']:.1f} %. Test accuracy is never used to choose."
    ]


def _iteration0_line(shared: dict | None) -> list[str]:
    if not shared:
        return []
    how = f"reused from run `{shared['source_run']}`" if shared["reused"] else "computed by this run"
    return [f"- iteration 0 (plain fine-tuning): {how}; shared iteration 0 {shared['key']}"]


def render_markdown(metrics: dict) -> str:
    """report.md: what the run is, then one table per section (iterations, wall time, teacher
    requests, phase processes)."""
    lines = _header(metrics) + _iteration_table(metrics) + _time_table(metrics)
    lines += _teacher_table(metrics) + _phase_table(metrics)
    lines += ["", "![validation and test accuracy by iteration, 95 % intervals](accuracy.png)", ""]
    lines += ["report.html: the same with the teacher's prompts and outputs and every filter decision.", ""]
    return "\n".join(lines)


def _header(metrics: dict) -> list[str]:
    return [
        f"# LLM2LLM run `{metrics['run']}`",
        "",
        f"- task: **{metrics['task']}** ({metrics['task_type']}), {metrics['seed_size']} seed examples (data seed "
        f"{metrics['data_seed']})",
        f"- method: **{metrics['method']}**{asked_note(metrics)}; options: "
        + (", ".join(option_names(metrics)) or "none (the paper's recipe)"),
        f"- student: `{metrics['student']}`; teacher: `{metrics['teacher']}` ({metrics['teacher_style']} prompts"
        + (f", fingerprint {metrics['teacher_fingerprint']}" if metrics.get("teacher_fingerprint") else "")
        + ")",
        f"- engines: student evaluation on {metrics['engines']['student']}, teacher on "
        f"{metrics['engines']['teacher']}",
        f"- evaluation: {metrics['evaluation']} decoding, exact answer match; invalid = no valid answer in the output",
        f"- status: {'complete' if metrics['complete'] else 'in progress'} "
        f"({len(metrics['iterations'])} of {metrics['iterations_planned'] + 1} iterations)",
        *[f"- note: {note}" for note in metrics["notes"]],
        *_selected_line(metrics.get("selected")),
        *_iteration0_line(metrics.get("iteration0")),
        "",
        "Iteration 0 is plain fine-tuning on the seed (the baseline).",
        "",
        f"- seed evaluation: {metrics.get('seed_evaluation', 'greedy')}",
        "",
    ]


def _iteration_table(metrics: dict) -> list[str]:
    lines = [
        "| iteration | train size | seed acc | seed wrong | generated | kept | dropped "
        "(unparsable/truncated/invalid/label/dup/near-dup/test) | validation acc | test acc | test invalid "
        "| vs plain FT | selected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = metrics["iterations"][0]["test_accuracy"] if metrics["iterations"] else 0
    for it in metrics["iterations"]:
        dropped = "/".join(str(it["dropped"].get(r, 0)) for r in DROP_REASONS) if it["dropped"] else "-"
        validation = "-" if it.get("validation_accuracy") is None else f"{100 * it['validation_accuracy']:.1f} %"
        chosen = "yes" if (metrics.get("selected") or {}).get("iteration") == it["iteration"] else ""
        lines.append(
            f"| {it['iteration']} | {it['train_size']} | {100 * it['seed_accuracy']:.1f} % | {it['seed_wrong']} | "
            f"{'-' if it['generated'] is None else it['generated']} | {'-' if it['kept'] is None else it['kept']} | "
            f"{dropped} | {validation} | "
            f"{100 * it['test_accuracy']:.1f} % ({it['test_correct']}/{it['test_total']}) | "
            f"{it['test_invalid']} | {100 * (it['test_accuracy'] - base):+.1f} | {chosen} |"
        )
    return lines


def _time_table(metrics: dict) -> list[str]:
    lines = [
        "",
        "## Wall time per phase (seconds)",
        "",
        "| iteration | " + " | ".join(PHASES) + " | inside the engines | process start/load/exit | llm2llm |",
        "|---" * (len(PHASES) + 4) + "|",
    ]
    for it in metrics["iterations"]:
        split = time_split(it, metrics.get("phases", []))
        lines.append(
            f"| {it['iteration']} | "
            + " | ".join(f"{it['phase_seconds'][p]:.1f}" if p in it["phase_seconds"] else "-" for p in PHASES)
            + f" | {split['engines']:.1f} | {split['process_other']:.1f} | {split['driver']:.1f} |"
        )
    return lines


def _teacher_table(metrics: dict) -> list[str]:
    asked = [it for it in metrics["iterations"] if it.get("teacher_requests")]
    if not asked:
        return []
    lines = [
        "",
        "## Teacher requests (the last attempt of each generate phase)",
        "",
        "| iteration | requests | from the run | from the cache | generated | engine seconds | tokens (prompt + "
        "completion) |",
        "|---|---|---|---|---|---|---|",
    ]
    for it in asked:
        t = it["teacher_requests"]
        tokens = f"{t['prompt_tokens']} + {t['completion_tokens']}" if "prompt_tokens" in t else "-"
        lines.append(
            f"| {it['iteration']} | {t['requests']} | {t['from_run']} | {t['from_cache']} | {t['generated']} | "
            f"{t['engine_seconds']:.1f} | {tokens} |"
        )
    return lines


def _phase_table(metrics: dict) -> list[str]:
    if not metrics.get("phases"):
        return []
    lines = [
        "",
        "## Phase processes (memory released before the next phase started)",
        "",
        "| phase | seconds | peak memory (MiB, summed peak RSS) | release checked by | release seconds "
        "| switch seconds |",
        "|---|---|---|---|---|---|",
    ]
    for p in metrics["phases"]:
        switch = "-" if p.get("switch_seconds") is None else f"{p['switch_seconds']:.2f}"
        peak = f"{p['peak_memory_mib']:.0f}" if p.get("peak_memory_mib") else "-"
        lines.append(
            f"| {p['key']} | {p['seconds']:.1f} | {peak} | {p['checked']} | {p['release_seconds']:.2f} | {switch} |"
        )
    return lines


# TensorBoard scalars per iteration (runs/<run>/tb/loop, step = iteration), from metrics.json's iterations.
LOOP_SCALARS = {
    "accuracy/test": "test_accuracy",
    "accuracy/validation": "validation_accuracy",
    "seed/accuracy": "seed_accuracy",
    "seed/wrong": "seed_wrong",
    "examples/train_size": "train_size",
    "examples/generated": "generated",
    "examples/kept": "kept",
}


def write_loop_scalars(tb_dir, metrics: dict) -> None:
    """Rewrite tb_dir from the metrics when they changed (the report is redone on every rerun: no
    point is ever logged twice, and a rerun that changes nothing rewrites nothing)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return
    points = [
        [tag, it["iteration"], float(it[key])]
        for it in metrics["iterations"]
        for tag, key in LOOP_SCALARS.items()
        if it.get(key) is not None
    ]
    if (tb_dir / "scalars.json").exists() and read_json(tb_dir / "scalars.json") == points:
        return
    from tensorboard.summary import Writer

    with atomic_dir(tb_dir) as tmp:
        writer = Writer(str(tmp))
        for tag, step, value in points:
            writer.add_scalar(tag, value, step=step)
        writer.close()
        atomic_write_json(tmp / "scalars.json", points)


def write_report(run, task, notes: list[str]) -> dict:
    metrics = collect_metrics(run, task, notes)
    atomic_write_json(run.path / "metrics.json", metrics)
    atomic_write_text(run.path / "report.md", render_markdown(metrics))
    png = plot_accuracy(metrics)
    atomic_write_bytes(run.path / "accuracy.png", png)
    atomic_write_text(run.path / "report.html", render_report_html(run.path, metrics, png))
    if run.config.train.tensorboard:
        write_loop_scalars(run.path / "tb" / "loop", metrics)
    return metrics


def results_table(run_dirs, split: str = "test") -> str:
    """One row per run: test (or validation) accuracy at each iteration (iteration 0 = plain fine-tuning)."""
    rows = []
    for run_dir in run_dirs:
        path = run_dir / "metrics.json"
        if not path.exists():
            raise UserError(f"{path} not found; is {run_dir} a run directory with at least one finished iteration?")
        rows.append(read_json(path))
    width = max(len(m["iterations"]) for m in rows)
    head = ["run", "task", "seed", "teacher", "engines (student/teacher)"] + [
        f"iter {i}" + (" (plain FT)" if i == 0 else "") for i in range(width)
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        values = [it.get(f"{split}_accuracy") for it in m["iterations"]]
        accs = ["-" if v is None else f"{100 * v:.1f}" for v in values] + ["-"] * (width - len(m["iterations"]))
        engines = "/".join(m["engines"].values()) if "engines" in m else "-"
        lines.append(
            "| " + " | ".join([m["run"], m["task"], str(m["seed_size"]), m["teacher"], engines, *accs]) + " |"
        )
    return "\n".join(lines)
