"""`llm2llm compare`: one table and one plot over many run directories, from their metrics.json
alone (compare.md, compare.png, and compare.html linking each run's report.html). Runs that
differ only in the RNG seed (data.seed) are one cell: mean ± std over seeds.

A run's accuracy is its last iteration's test accuracy, and beside it the test accuracy of the
iteration selected on validation (llm2llm/selection.py); never the iteration best on test: choosing
by test accuracy would leak the test set into the result.
"""

from __future__ import annotations

import io
import os
import statistics
from collections import defaultdict
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.report import selected_student
from llm2llm.report_html import render_compare_html
from llm2llm.store import read_json

METHOD_ORDER = ("plain", "eda", "auggpt", "one-shot", "llm2llm")


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among the paths: each path is a run directory or a folder of them."""
    runs = []
    for path in paths:
        if (path / "metrics.json").exists():
            runs.append(path)
        elif any(path.glob("*/metrics.json")):
            runs.extend(sorted(p.parent for p in path.glob("*/metrics.json")))
        else:
            raise UserError(
                f"{path}: no metrics.json in it or in its sub-folders; give run directories (runs/<run>) "
                "that finished at least one iteration, or the folder holding them"
            )
    return runs


def method_label(m: dict) -> str:
    """The method, with the ablation switches a run had on (metrics.json `variant`): 'llm2llm (continued)'."""
    method, variant = m.get("method", "llm2llm"), m.get("variant") or []
    return f"{method} ({', '.join(variant)})" if variant else method


def cell_key(m: dict) -> tuple:
    return (m["task"], method_label(m), m["seed_size"], m["student"], m["teacher"])


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: list[float], scale: float = 100, digits: int = 1, sign: str = "") -> str:
    mean, std = _mean_std([scale * v for v in values])
    return f"{mean:{sign}.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def group_runs(runs: list[Path]) -> tuple[dict[tuple, list[dict]], list[str]]:
    cells, skipped = defaultdict(list), []
    for run in runs:
        metrics = read_json(run / "metrics.json")
        if not metrics.get("complete") or not metrics["iterations"]:
            skipped.append(
                f"{run} (not finished: {len(metrics['iterations'])} of {metrics['iterations_planned'] + 1} iterations)"
            )
            continue
        metrics["_path"] = str(run)
        cells[cell_key(metrics)].append(metrics)
    for key in cells:
        cells[key].sort(key=lambda m: m.get("data_seed", 0))
        seeds = [m.get("data_seed", 0) for m in cells[key]]
        if len(seeds) != len(set(seeds)):
            raise UserError(
                f"two runs of {key[0]} / {key[1]} have the same data seed "
                f"({', '.join(m['_path'] for m in cells[key])}); "
                "compare one run per seed (runs that differ only in a setting compare does not tell apart, "
                "e.g. teacher.per_wrong, go in separate compare calls)"
            )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(
        sorted(
            cells.items(),
            key=lambda kv: (kv[0][0], order.get(kv[0][1].split(" (")[0], 99), kv[0][1], kv[0][4], kv[0][2:4]),
        )
    ), skipped


def _short(model: str) -> str:
    return Path(model).name if "/" in model else model


def _row_key(key: tuple, cells: dict) -> tuple:
    """A pivot row: the method, plus the teacher and seed size where the runs have several of them."""
    _, method, seed_size, _, teacher = key
    row = (method,)
    if len({k[4] for k in cells}) > 1:
        row += (_short(teacher),)
    if len({k[2] for k in cells}) > 1:
        row += (f"{seed_size} seed",)
    return row


def _validation(runs: list[dict], method: str) -> str:
    """Last-iteration validation accuracy and its gain over iteration 0, where every run has one."""
    pairs = [
        (m["iterations"][0].get("validation_accuracy"), m["iterations"][-1].get("validation_accuracy")) for m in runs
    ]
    if any(first is None or last is None for first, last in pairs):
        return "- | -"
    return f"{_pm([last for _, last in pairs])} | " + (
        "-" if method == "plain" else _pm([b - a for a, b in pairs], sign="+")
    )


def _selected(runs: list[dict], method: str) -> str:
    """Test accuracy of each run's iteration selected on validation, its gain, and which iterations."""
    chosen = [m.get("selected") or selected_student(m["iterations"]) for m in runs]
    tests = [c["test_accuracy"] for c in chosen]
    gains = [c["test_accuracy"] - m["iterations"][0]["test_accuracy"] for c, m in zip(chosen, runs)]
    return f"{_pm(tests)} | {'-' if method == 'plain' else _pm(gains, sign='+')} | " + ", ".join(
        str(c["iteration"]) for c in chosen
    )


def render_markdown(cells: dict[tuple, list[dict]], skipped: list[str], png_name: str) -> str:
    evaluations = sorted({m["evaluation"] for runs in cells.values() for m in runs})
    several_teachers = len({k[4] for k in cells}) > 1
    lines = [
        "# LLM2LLM comparison",
        "",
        f"{sum(len(r) for r in cells.values())} runs; test accuracy is each run's last iteration "
        f"(mean ± sample std over RNG seeds); evaluation: {', '.join(evaluations)} decoding. "
        "'selected on validation' is the iteration with the best validation accuracy (ties: the earliest). "
        "'vs plain FT' is against iteration 0 of the same runs (the same seed examples, fine-tuned alone).",
        "",
        "| dataset | method |"
        + (" teacher |" if several_teachers else "")
        + " seed size | seeds | test acc (%) | vs plain FT | "
        "train size | teacher tokens | wall time (min) | validation acc (%) | validation vs plain FT | "
        "selected on validation: test acc (%) | its gain over plain FT | selected iteration per seed |",
        "|---" * (14 + several_teachers) + "|",
    ]
    for (task, method, seed_size, _student, teacher), runs in cells.items():
        final = [m["iterations"][-1]["test_accuracy"] for m in runs]
        gain = [m["iterations"][-1]["test_accuracy"] - m["iterations"][0]["test_accuracy"] for m in runs]
        lines.append(
            f"| {task} | {method} |"
            + (f" {_short(teacher)} |" if several_teachers else "")
            + f" {seed_size} | {', '.join(str(m.get('data_seed', 0)) for m in runs)} | {_pm(final)} | "
            f"{'-' if method == 'plain' else _pm(gain, sign='+')} | "
            f"{_pm([m['iterations'][-1]['train_size'] for m in runs], 1, 0)} | "
            f"{_pm([m.get('teacher_tokens', 0) for m in runs], 1, 0)} | "
            f"{_pm([m.get('wall_seconds', 0) for m in runs], 1 / 60)} | "
            f"{_validation(runs, method)} | {_selected(runs, method)} |"
        )
    tasks = sorted({k[0] for k in cells})
    rows = list(dict.fromkeys(_row_key(k, cells) for k in cells))
    lines += [
        "",
        "## Test accuracy (%), method x dataset",
        "",
        "| method | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    for row_key in rows:
        row = []
        for task in tasks:
            runs = [m for k, rs in cells.items() if k[0] == task and _row_key(k, cells) == row_key for m in rs]
            row.append(_pm([m["iterations"][-1]["test_accuracy"] for m in runs]) if runs else "-")
        lines.append(f"| {' / '.join(map(str, row_key))} | " + " | ".join(row) + " |")
    models = sorted({(k[3], k[4]) for k in cells})
    lines += ["", "Student / teacher: " + "; ".join(f"`{s}` / `{t}`" for s, t in models) + "."]
    lines += ["", "## Runs", ""] + [
        f"- {m['_path']} ({k[1]}, seed {m.get('data_seed', 0)})" for k, rs in cells.items() for m in rs
    ]
    if skipped:
        lines += ["", "Left out:"] + [f"- {s}" for s in skipped]
    return "\n".join(lines + ["", f"![test accuracy per iteration]({png_name})", ""])


def plot(cells: dict[tuple, list[dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = sorted({k[0] for k in cells})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for key, runs in cells.items():
            cell_task, method, seed_size = key[:3]
            if cell_task != task:
                continue
            length = min(len(m["iterations"]) for m in runs)
            xs = list(range(length))
            per_iteration = [[100 * m["iterations"][i]["test_accuracy"] for m in runs] for i in xs]
            means = [statistics.fmean(v) for v in per_iteration]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_iteration]
            teacher = f", teacher {_short(key[4])}" if len({k[4] for k in cells}) > 1 else ""
            label = f"{method} ({seed_size} seed examples{teacher}, {len(runs)} run{'s' if len(runs) > 1 else ''})"
            if length == 1:
                ax.axhline(means[0], linestyle="--", color="grey", label=label)
                continue
            (line,) = ax.plot(xs, means, marker="o", label=label)
            ax.fill_between(
                xs,
                [m - s for m, s in zip(means, stds)],
                [m + s for m, s in zip(means, stds)],
                color=line.get_color(),
                alpha=0.15,
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(task)
        ax.set_xlabel("iteration")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same runs, same bytes
    plt.close(fig)
    return buffer.getvalue()


def compare(paths: list[Path], out_dir: Path) -> tuple[Path, str]:
    from llm2llm.store import atomic_write_bytes

    cells, skipped = group_runs(find_runs(paths))
    if not cells:
        raise UserError("no finished runs to compare" + (f": {'; '.join(skipped)}" if skipped else ""))
    markdown = render_markdown(cells, skipped, "compare.png")
    png = plot(cells)
    runs = [
        {
            "name": Path(m["_path"]).name,
            "method": key[1],
            "seed": m.get("data_seed", 0),
            "href": os.path.relpath(Path(m["_path"]) / "report.html", out_dir)
            if (Path(m["_path"]) / "report.html").exists()
            else None,
        }
        for key, group in cells.items()
        for m in group
    ]
    page = render_compare_html(markdown, png, runs)
    for name, content in (("compare.png", png), ("compare.md", markdown.encode()), ("compare.html", page.encode())):
        path = out_dir / name
        if not path.exists() or path.read_bytes() != content:  # same runs: nothing rewritten
            atomic_write_bytes(path, content)
    return out_dir / "compare.md", markdown
