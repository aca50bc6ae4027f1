"""runs/<run>/report.html: one static, self-contained page (no server, no network: the plot is
embedded, the search box is a few lines of inline script) derived from the run directory alone.

It shows accuracy per iteration on validation and test with 95 % intervals, the confusion matrix of
the selected student on test, a timeline of the phases, and per iteration every seed example the
teacher was asked about: what the student answered, the teacher's prompt and raw output, and each
candidate with its filter decision and reason. Text from the models is escaped (autoescape).
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path

from llm2llm.intervals import wilson_interval
from llm2llm.store import read_json, read_jsonl

TEMPLATES = Path(__file__).parent / "templates"


def environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # model outputs are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def accuracy_rows(metrics: dict) -> list[dict]:
    """Per iteration: validation and test accuracy (%) with their 95 % Wilson intervals."""
    rows = []
    selected = (metrics.get("selected") or {}).get("iteration")
    for it in metrics["iterations"]:
        row = {"iteration": it["iteration"], "train_size": it["train_size"], "selected": it["iteration"] == selected}
        for split in ("validation", "test"):
            total = it.get(f"{split}_total")
            correct = it.get(f"{split}_correct")
            if not total or correct is None:
                row[split] = None
                continue
            low, high = wilson_interval(correct, total)
            row[split] = {"acc": 100 * correct / total, "low": 100 * low, "high": 100 * high, "n": total}
        row["gain"] = 100 * (it["test_accuracy"] - metrics["iterations"][0]["test_accuracy"])
        row["seed_wrong"], row["kept"] = it["seed_wrong"], it["kept"]
        rows.append(row)
    return rows


def confusion(run: Path, metrics: dict) -> dict | None:
    """The selected student's test confusion matrix (classification; recorded in scores.json)."""
    selected = metrics.get("selected")
    if not selected:
        return None
    scores = read_json(run / f"iter_{selected['iteration']:03d}" / "scores.json")
    matrix = scores["test"].get("confusion")
    if matrix is None:
        return None
    gold = sorted(matrix)
    answers = sorted({a for row in matrix.values() for a in row if a}) + [""]
    answers = [a for a in answers if a or any(row.get("", 0) for row in matrix.values())]
    return {
        "iteration": selected["iteration"],
        "gold": gold,
        "answers": answers,
        "cells": [[matrix[g].get(a, 0) for a in answers] for g in gold],
    }


def timeline(run: Path) -> list[dict]:
    """Each phase in the order it ran: start (seconds from the run's start), length, peak memory."""
    if not (run / "timings.jsonl").exists():
        return []
    peaks = {}
    if (run / "phases.jsonl").exists():
        peaks = {p["key"]: p.get("peak_memory_mib") for p in read_jsonl(run / "phases.jsonl")}
    rows, start = [], 0.0
    for t in read_jsonl(run / "timings.jsonl"):
        peak = peaks.get(f"{t['phase']} iter_{t['iteration']:03d}")
        rows.append(
            {"iteration": t["iteration"], "phase": t["phase"], "start": start, "seconds": t["seconds"], "peak": peak}
        )
        start += t["seconds"]
    for row in rows:
        row["left"] = 100 * row["start"] / start if start else 0
        row["width"] = max(0.3, 100 * row["seconds"] / start) if start else 0
    return rows


def iteration_examples(run: Path, it: int) -> list[dict]:
    """The seed examples the teacher was asked about in iteration `it`, each with the student's
    answers, the teacher's prompts and raw outputs, and every candidate with its decision."""
    it_dir = run / f"iter_{it:03d}"
    if not (it_dir / "filter_decisions.jsonl").exists():
        return []
    examples = {ex["id"]: ex for ex in read_jsonl(it_dir / "train.jsonl")}
    wrong = read_json(it_dir / "scores.json")["seed"]["wrong_ids"]
    answers = defaultdict(list)
    if (it_dir / "predictions.jsonl").exists():
        for p in read_jsonl(it_dir / "predictions.jsonl"):
            if p["split"] == "seed":
                answers[p["id"]].append(p["output"])
    teacher = defaultdict(list)
    if (it_dir / "teacher_outputs.jsonl").exists():
        for out in read_jsonl(it_dir / "teacher_outputs.jsonl"):
            teacher[out.get("parent_id")].append({"prompt": out["prompt"], "output": out["output"]})
    decisions = defaultdict(list)
    for d in read_jsonl(it_dir / "filter_decisions.jsonl"):
        parent = (d["example"] or {}).get("parent_id") or d["key"].split(":")[0]
        decisions[parent].append(
            {
                "text": (d["example"] or {}).get("text", ""),
                "label": (d["example"] or {}).get("label", ""),
                "reason": d["reason"],
                "kept": d["kept"],
                "detail": d.get("detail"),
            }
        )
    parents = list(dict.fromkeys([*wrong, *teacher, *decisions]))
    rows = []
    for parent in parents:
        ex = examples.get(parent, {"id": parent})
        rows.append(
            {
                "id": parent,
                "text": ex.get("text") or ex.get("question") or "",
                "label": ex.get("label") or ex.get("answer") or "",
                "wrong": parent in wrong,
                "answers": answers.get(parent, []),
                "teacher": teacher.get(parent, []),
                "candidates": decisions.get(parent, []),
            }
        )
    return rows


def asked_note(metrics: dict) -> str:
    """LLM2LLM's K, as the header names it (older runs' metrics do not record it)."""
    asked = metrics.get("asked")
    return f" (K = {asked['per_wrong']} per wrong seed example)" if asked and metrics["method"] == "llm2llm" else ""


def option_names(metrics: dict) -> list[str]:
    """The variant's names, with teacher.paraphrase's count where the run recorded it."""
    count = (metrics.get("asked") or {}).get("paraphrase")
    return [f"paraphrase {count}" if name == "paraphrase" and count else name for name in metrics.get("variant") or []]


def render_report_html(run: Path, metrics: dict, accuracy_png: bytes) -> str:
    iterations = [
        {"iteration": it["iteration"], "examples": iteration_examples(run, it["iteration"]), "metrics": it}
        for it in metrics["iterations"]
    ]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            m=metrics,
            asked=asked_note(metrics),
            options=option_names(metrics),
            accuracy=accuracy_rows(metrics),
            plot=png_data_uri(accuracy_png),
            confusion=confusion(run, metrics),
            timeline=timeline(run),
            iterations=iterations,
        )
    )


def render_compare_html(markdown_text: str, png: bytes, runs: list[dict]) -> str:
    """compare.html: the comparison table, its plot, and a link to each run's report.html."""
    import markdown

    # The table holds task, run and teacher names that anyone who can name a run chooses: HTML in them is
    # escaped, and Markdown makes no links or images of them (the plot is embedded below, the runs listed).
    converter = markdown.Markdown(extensions=["tables"])
    for pattern in ("link", "reference", "image_link", "image_reference", "short_reference", "short_image_ref"):
        converter.inlinePatterns.deregister(pattern, strict=False)
    for pattern in ("autolink", "automail", "html"):
        converter.inlinePatterns.deregister(pattern, strict=False)
    body = converter.convert(html.escape(markdown_text.split("\n![", 1)[0], quote=False))
    return environment().get_template("compare.html.j2").render(body=body, plot=png_data_uri(png), runs=runs)
