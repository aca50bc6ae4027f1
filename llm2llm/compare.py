"""`llm2llm compare`: one table and one plot over many run directories, from their metrics.json
alone (compare.md, compare.png, and compare.html linking each run's report.html). Runs that
differ only in the RNG seed (data.rng_seed) are one cell: mean ± std over seeds. Runs of one seed that
differ only in the teacher's sampling seed (teacher.sampling.seed) are draws of that seed: each figure is
first averaged over a seed's draws, and the paired interval resamples them (llm2llm/paired.py).

A run's accuracy is its last iteration's test accuracy, and beside it the test accuracy of the
iteration selected on validation (llm2llm/selection.py); never the iteration best on test: choosing
by test accuracy would leak the test set into the result.
"""

from __future__ import annotations

import io
import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.paired import Paired, bootstrap, evaluation_ids, seed_draws, wrong_ids
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


def data_seed(m: dict) -> int:
    return m.get("data_seed", 0)


def teacher_seed(m: dict) -> int:
    return m.get("teacher_seed", 0)  # metrics.json before 2026-12-07: every run so far drew with 0


def by_seed(runs: list[dict]) -> dict[int, list[dict]]:
    """A cell's runs by data seed: each seed's teacher draws."""
    seeds = defaultdict(list)
    for m in runs:
        seeds[data_seed(m)].append(m)
    return dict(seeds)


def per_seed(runs: list[dict], value) -> list[float]:
    """value(run) averaged over each seed's teacher draws: one figure per seed, what mean ± std is over."""
    return [statistics.fmean(value(m) for m in draws) for draws in by_seed(runs).values()]


def _draws(runs: list[dict]) -> str:
    """' × 2 teacher draws' where every seed has that many (more than one), else ''."""
    counts = set(Counter(data_seed(m) for m in runs).values())
    return f" × {max(counts)} teacher draws" if len(counts) == 1 and max(counts) > 1 else ""


def _seeds(runs: list[dict]) -> str:
    """The seeds column: '0, 1, 2', and how many teacher draws each has where any has several."""
    draws = Counter(data_seed(m) for m in runs)
    if _draws(runs) or max(draws.values()) == 1:
        return ", ".join(map(str, draws)) + _draws(runs)
    return ", ".join(f"{s} ({d} draws)" if d > 1 else str(s) for s, d in draws.items())


def _seed_count(runs: list[dict]) -> str:
    """The paired table's seeds column: how many, and the teacher draws where every seed has several."""
    return f"{len(by_seed(runs))}{_draws(runs)}"


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
        cells[key].sort(key=lambda m: (data_seed(m), teacher_seed(m)))
        seeds = [(data_seed(m), teacher_seed(m)) for m in cells[key]]
        if len(seeds) != len(set(seeds)):
            raise UserError(
                f"two runs of {key[0]} / {key[1]} have the same data seed and teacher seed "
                f"({', '.join(m['_path'] for m in cells[key])}); "
                "compare one run per seed and teacher.sampling.seed (runs that differ only in a setting compare "
                "does not tell apart, e.g. teacher.per_wrong, go in separate compare calls)"
            )
    return ordered(cells), skipped


def ordered(cells: dict[tuple, list[dict]]) -> dict[tuple, list[dict]]:
    """Cells by dataset, then method in METHOD_ORDER (variants after their method), teacher, seed size."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(
        sorted(
            cells.items(),
            key=lambda kv: (kv[0][0], order.get(kv[0][1].split(" (")[0], 99), kv[0][1], kv[0][4], kv[0][2:4]),
        )
    )


# What plain fine-tuning's row keeps of another run's iteration 0: its scores, not the teacher's work
# that iteration 0's generate phase did for the method (teacher_requests, kept examples, diversity).
PLAIN_KEYS = ("iteration", "train_size", "seed_accuracy", "seed_wrong")
PLAIN_PREFIXES = ("test_", "validation_")


def add_plain(cells: dict[tuple, list[dict]]) -> tuple[dict[tuple, list[dict]], list[str]]:
    """Give each dataset cell without plain-fine-tuning runs a plain row made of its runs' iteration 0, one
    per seed (runs of one seed share iteration 0, so any of them gives the same scores): the absolute
    accuracy every 'vs plain FT' column is measured from. Returns the cells and a note per row made."""
    out, notes = dict(cells), []
    for task, seed_size, student, teacher in dict.fromkeys((k[0], k[2], k[3], k[4]) for k in cells):
        plain_key = (task, "plain", seed_size, student, teacher)
        if plain_key in cells:
            continue
        by_seed: dict[int, tuple[dict, bool]] = {}  # seed -> (run, whether it reused iteration 0)
        for k, runs in cells.items():
            if k[0] == task and k[2:] == (seed_size, student, teacher):
                for m in runs:  # the run that computed iteration 0 (its phase times are real) before reusers
                    seed, reused = data_seed(m), (m.get("iteration0") or {}).get("reused", False)
                    if seed not in by_seed or (by_seed[seed][1] and not reused):
                        by_seed[seed] = (m, reused)
        out[plain_key] = [_iteration0(by_seed[s][0]) for s in sorted(by_seed)]
        notes.append(
            f"{task} plain (seed size {seed_size}): iteration 0 of the other runs, one per seed "
            "(no plain-method run was given)"
        )
    return ordered(out), notes


def _iteration0(m: dict) -> dict:
    """A run's iteration 0 as a plain fine-tuning run of its own (same folder, so its predictions pair)."""
    first = m["iterations"][0]
    entry = {k: v for k, v in first.items() if k in PLAIN_KEYS or k.startswith(PLAIN_PREFIXES)}
    seconds = sum((first.get("phase_seconds") or {}).get(p, 0) for p in ("train", "evaluate"))
    drop = ("selected", "variant", "iterations", "teacher_tokens", "wall_seconds")
    return {k: v for k, v in m.items() if k not in drop} | {
        "method": "plain",
        "iterations": [entry],
        "teacher_tokens": 0,
        "wall_seconds": seconds,
        "_iteration0_of": method_label(m),  # the Runs list says whose iteration 0 it is
    }


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
    if any(m["iterations"][i].get("validation_accuracy") is None for m in runs for i in (0, -1)):
        return "- | -"
    last = per_seed(runs, lambda m: m["iterations"][-1]["validation_accuracy"])
    gain = per_seed(
        runs, lambda m: m["iterations"][-1]["validation_accuracy"] - m["iterations"][0]["validation_accuracy"]
    )
    return f"{_pm(last)} | " + ("-" if method == "plain" else _pm(gain, sign="+"))


def _chosen(m: dict) -> dict:
    return m.get("selected") or selected_student(m["iterations"])


def _selected(runs: list[dict], method: str) -> str:
    """Test accuracy of each run's iteration selected on validation, its gain, and which iterations."""
    tests = per_seed(runs, lambda m: _chosen(m)["test_accuracy"])
    gains = per_seed(runs, lambda m: _chosen(m)["test_accuracy"] - m["iterations"][0]["test_accuracy"])
    return f"{_pm(tests)} | {'-' if method == 'plain' else _pm(gains, sign='+')} | " + ", ".join(
        str(_chosen(m)["iteration"]) for m in runs
    )


def render_markdown(
    cells: dict[tuple, list[dict]],
    skipped: list[str],
    png_name: str,
    reference: str | None = None,
    split: str = "test",
    notes: list[str] = (),
) -> str:
    evaluations = sorted({m["evaluation"] for runs in cells.values() for m in runs})
    several_teachers = len({k[4] for k in cells}) > 1
    lines = [
        "# LLM2LLM comparison",
        "",
        f"{sum(len(r) for r in cells.values())} runs; test accuracy is each run's last iteration "
        f"(mean ± sample std over RNG seeds, a seed's teacher draws averaged first); evaluation: "
        f"{', '.join(evaluations)} decoding. "
        "'selected on validation' is the iteration with the best validation accuracy (ties: the earliest). "
        "'vs plain FT' is against iteration 0 of the same runs (the same seed examples, fine-tuned alone).",
        *(["", *(f"- {n}" for n in notes)] if notes else []),
        "",
        "| dataset | method |"
        + (" teacher |" if several_teachers else "")
        + " seed size | seeds | test acc (%) | vs plain FT | "
        "train size | teacher tokens | wall time (min) | validation acc (%) | validation vs plain FT | "
        "selected on validation: test acc (%) | its gain over plain FT | selected iteration per seed |",
        "|---" * (14 + several_teachers) + "|",
    ]
    for (task, method, seed_size, _student, teacher), runs in cells.items():
        final = per_seed(runs, lambda m: m["iterations"][-1]["test_accuracy"])
        gain = per_seed(runs, lambda m: m["iterations"][-1]["test_accuracy"] - m["iterations"][0]["test_accuracy"])
        lines.append(
            f"| {task} | {method} |"
            + (f" {_short(teacher)} |" if several_teachers else "")
            + f" {seed_size} | {_seeds(runs)} | {_pm(final)} | "
            f"{'-' if method == 'plain' else _pm(gain, sign='+')} | "
            f"{_pm(per_seed(runs, lambda m: m['iterations'][-1]['train_size']), 1, 0)} | "
            f"{_pm(per_seed(runs, lambda m: m.get('teacher_tokens', 0)), 1, 0)} | "
            f"{_pm(per_seed(runs, lambda m: m.get('wall_seconds', 0)), 1 / 60)} | "
            f"{_validation(runs, method)} | {_selected(runs, method)} |"
        )
    lines += render_paired(cells, reference, split) + _method_by_dataset(cells)
    models = sorted({(k[3], k[4]) for k in cells})
    lines += ["", "Student / teacher: " + "; ".join(f"`{s}` / `{t}`" for s, t in models) + "."]
    lines += ["", "## Runs", ""] + [
        f"- {m['_path']} ({_whose(k[1], m)}, seed {data_seed(m)}"
        + (f", teacher seed {teacher_seed(m)})" if teacher_seed(m) else ")")
        for k, rs in cells.items()
        for m in rs
    ]
    if skipped:
        lines += ["", "Left out:"] + [f"- {s}" for s in skipped]
    return "\n".join(lines + ["", f"![test accuracy per iteration]({png_name})", ""])


def _whose(method: str, m: dict) -> str:
    """A run's line in the Runs list: its method, or for a plain row made of another run's iteration 0, that."""
    return f"plain: iteration 0 of this {m['_iteration0_of']} run" if "_iteration0_of" in m else method


def _method_by_dataset(cells: dict[tuple, list[dict]]) -> list[str]:
    """The test accuracy table with a row per method (and variant) and a column per dataset."""
    tasks = sorted({k[0] for k in cells})
    lines = [
        "",
        "## Test accuracy (%), method x dataset",
        "",
        "| method | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    for row_key in dict.fromkeys(_row_key(k, cells) for k in cells):
        row = []
        for task in tasks:
            runs = [m for k, rs in cells.items() if k[0] == task and _row_key(k, cells) == row_key for m in rs]
            row.append(_pm(per_seed(runs, lambda m: m["iterations"][-1]["test_accuracy"])) if runs else "-")
        lines.append(f"| {' / '.join(map(str, row_key))} | " + " | ".join(row) + " |")
    return lines


def output_tokens(m: dict) -> int:
    """Tokens the teacher wrote for a run (its answers, not the prompts): the budget methods are matched on."""
    return sum((it.get("teacher_requests") or {}).get("completion_tokens", 0) for it in m["iterations"])


def _wrong(m: dict, split: str, iteration: int | None = None) -> tuple[set[str], int] | None:
    """A run's wrong ids on a split at an iteration (default: its last)."""
    return wrong_ids(Path(m["_path"]), m["iterations"][-1]["iteration"] if iteration is None else iteration, split)


def _same_sample(runs: list[dict], split: str) -> None:
    """Runs paired on one seed must have been scored on the same sample of the split."""
    first = Path(runs[0]["_path"])
    for m in runs[1:]:
        if evaluation_ids(Path(m["_path"]), split) != evaluation_ids(first, split):
            raise UserError(
                f"{first} and {m['_path']} (seed {data_seed(m)}) were scored on different {split} samples; "
                "pair runs made with the same data.test_size / data.validation_size"
            )


def paired(runs: list[dict], reference: list[dict] | None, split: str) -> Paired | None:
    """The paired difference of a cell's runs (the last iteration of each seed's draws) against plain
    fine-tuning (reference None: the same runs' iteration 0) or against the reference method's runs on
    the same seeds; None where no seed has both scored."""
    theirs_by_seed = by_seed(reference) if reference is not None else {}
    pairs = []
    for seed, draws in by_seed(runs).items():
        if reference is None:  # the draws share iteration 0: one plain fine-tuning to pair them with
            mine, theirs = [_wrong(m, split) for m in draws], [_wrong(draws[0], split, 0)]
        elif seed in theirs_by_seed:
            _same_sample(draws + theirs_by_seed[seed], split)
            mine, theirs = [_wrong(m, split) for m in draws], [_wrong(m, split) for m in theirs_by_seed[seed]]
        else:
            continue
        if None in mine or None in theirs:
            continue
        try:
            pairs.append(seed_draws(seed, mine, theirs))
        except ValueError as e:
            raise UserError(f"{draws[0]['_path']}: {e}") from None
    return bootstrap(pairs) if pairs else None


def _difference(result: Paired | None) -> str:
    if result is None:
        return "- | - | - | -"
    per_seed = ", ".join(f"{100 * p.difference:+.1f}" for p in result.seeds)
    return (
        f"{100 * result.mean:+.1f} | [{100 * result.low:+.1f}, {100 * result.high:+.1f}] | "
        f"{result.wins}/{len(result.seeds)} | {per_seed}"
    )


def _diversity(runs: list[dict], name: str) -> str:
    """Mean over runs of a diversity figure of the examples the last augmentation kept (metrics.json)."""
    last = [next((it["diversity"] for it in reversed(m["iterations"]) if it.get("diversity")), {}) for m in runs]
    values = [d.get(name) for d in last]
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values):.3f}" if values else "-"


def render_paired(cells: dict[tuple, list[dict]], reference: str | None, split: str) -> list[str]:
    """The paired table: each method against plain fine-tuning and against the reference method, per
    seed and overall with a 95 % interval, and the teacher's output tokens against the reference's."""
    ref_label = reference or "-"
    several_draws = any(len(draws) > 1 for runs in cells.values() for draws in by_seed(runs).values())
    lines = [
        "",
        f"## Paired differences on {split} (points; last iteration)",
        "",
        "Each method against plain fine-tuning (iteration 0 of the same runs) and against "
        f"{'`' + reference + '`' if reference else 'no reference method (--reference)'}, on the same seeds and "
        f"the same {split} examples: mean of the per-seed differences, its 95 % interval (bootstrap over seeds, "
        + ("then a seed's teacher draws, " if several_draws else "")
        + "then examples within each seed, 10,000 replicates; llm2llm/paired.py), the seeds on which the method "
        "is ahead, and each seed's difference"
        + (" (the mean over its teacher draws)" if several_draws else "")
        + ". Teacher output tokens are the answers the teacher wrote (mean per seed); equal budget means within "
        "10 % of the reference's.",
        "",
        f"| dataset | method | seeds | vs plain FT | 95 % CI | wins | per seed | vs {ref_label} | 95 % CI | wins | "
        f"per seed | teacher output tokens | vs {ref_label} tokens | kept: distinct-2 | kept: pairwise ROUGE-L |",
        "|---" * 15 + "|",
    ]
    for key, runs in cells.items():
        task, method, seed_size, student, teacher = key
        ref_runs = cells.get((task, reference, seed_size, student, teacher)) if reference else None
        tokens = statistics.fmean(per_seed(runs, output_tokens))
        if ref_runs and method != reference:
            ref_tokens = statistics.fmean(per_seed(ref_runs, output_tokens))
            ratio = tokens / ref_tokens if ref_tokens else None
            budget = "-" if ratio is None else f"{ratio:.2f}x" + (" (equal)" if abs(ratio - 1) <= 0.10 else "")
            against = _difference(paired(runs, ref_runs, split))
        else:
            budget, against = "-", "- | - | - | -"
        plain = "- | - | - | -" if method == "plain" else _difference(paired(runs, None, split))
        lines.append(
            f"| {task} | {method} | {_seed_count(runs)} | {plain} | {against} | {tokens:.0f} | {budget} | "
            f"{_diversity(runs, 'distinct_2')} | {_diversity(runs, 'pairwise_rouge_l')} |"
        )
    return lines + _draw_spread(cells, split)


def _draw_spread(cells: dict[tuple, list[dict]], split: str) -> list[str]:
    """How far apart a seed's teacher draws land, per cell that has several: the noise a single draw
    carries, beside the differences above."""
    lines = []
    for (task, method, *_), runs in cells.items():
        spreads = [
            100 * (max(accuracy) - min(accuracy))
            for draws in by_seed(runs).values()
            if len(draws) > 1
            for accuracy in [[m["iterations"][-1][f"{split}_accuracy"] for m in draws]]
        ]
        if spreads:
            lines.append(
                f"- {task} {method}: the teacher draws of one seed differ by {statistics.fmean(spreads):.1f} "
                f"{split} points on average (largest {max(spreads):.1f}; seeds with several draws: {len(spreads)})"
            )
    return ["", "Teacher draws (runs of one seed differing only in teacher.sampling.seed):", *lines] if lines else []


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
            per_iteration = [per_seed(runs, lambda m, i=i: 100 * m["iterations"][i]["test_accuracy"]) for i in xs]
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


def compare(paths: list[Path], out_dir: Path, reference: str | None = None, split: str = "test") -> tuple[Path, str]:
    from llm2llm.store import atomic_write_bytes

    cells, skipped = group_runs(find_runs(paths))
    if not cells:
        raise UserError("no finished runs to compare" + (f": {'; '.join(skipped)}" if skipped else ""))
    cells, notes = add_plain(cells)
    methods = sorted({k[1] for k in cells})
    if reference and reference not in methods:
        raise UserError(f"--reference {reference}: no such method among the runs; they have {', '.join(methods)}")
    markdown = render_markdown(cells, skipped, "compare.png", reference, split, notes)
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
