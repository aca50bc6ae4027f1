"""Print bench/results.json as one markdown table (what `make bench` ends with).

python bench/table.py [--results bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS  # noqa: E402

ORDER = (
    "teacher",
    "teacher_phase",
    "evaluate",
    "dedup",
    "overhead",
    "boost",
    "memory",
    "crash_resume",
    "gpu_zero2",
    "gpu_zero3",
)


def fmt_seconds(side: dict | None) -> str:
    if not side or side.get("median_s") is None:
        return "-"
    seconds = side["median_s"]
    shown = f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.3g} s"
    return f"{side['name']}: {shown}"


def row(key: str, entry: dict) -> str:
    when = entry.get("measured", "-")
    if key == "memory":
        peaks = entry["peak_mib"]
        small = min(peaks, key=int)
        worst = max(v for k, v in peaks[small].items() if k != "driver")
        largest = entry["largest_seed_size"] or "not bounded by memory"
        result = (
            f"peak phase {worst:.0f} MiB + driver {peaks[small]['driver']:.0f} MiB (seed {small}); "
            f"largest seed size: {largest}"
        )
        return f"| memory | {result} | - | - | {entry['goal']} | {when} |"
    if key == "crash_resume":
        return (
            f"| crash_resume | {entry['identical']}/{entry['trials']} killed runs identical after rerun | "
            f"- | - | {entry['goal']} | {when} |"
        )
    if key.startswith("gpu_"):  # bench/gpu_check.py
        train = max(entry["training"], key=lambda t: t["tokens_per_s_per_gpu"])
        gen = max((g["tokens_per_s"] for g in entry["generation"]), default=0)
        mfu = f"MFU {100 * train['mfu']:.1f} %, " if train["mfu"] is not None else ""
        result = (
            f"{mfu}{train['tokens_per_s_per_gpu']:.0f} training tokens/s/GPU, {gen:.0f} generated tokens/s, "
            f"switch <= {entry['phase_switch_seconds']['max']:.1f} s, release {'/'.join(entry['release_checks'])}"
        )
        return f"| {key} | {result} | - | - | {entry['goal']} | {when} |"
    if key == "boost":
        return (
            f"| boost | {entry['llm2llm']['median_s'] / 60:.1f} min | - | {fmt_seconds(entry['llm2llm'])} "
            f"| <= 20 min | {when} |"
        )
    ratio = entry["ratio"]
    shown = (
        f"{100 * ratio:.1f} %"
        if key == "overhead"
        else (f"{ratio:g}x" if key in ("evaluate", "dedup", "teacher_phase") else f"{ratio:g}")
    )
    return (
        f"| {key} | {shown} | {fmt_seconds(entry.get('baseline'))} | {fmt_seconds(entry.get('llm2llm'))} "
        f"| {entry['goal']} | {when} |"
    )


def render(results: dict) -> str:
    lines = [
        "| benchmark | result | baseline (median) | llm2llm (median) | goal | measured |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(results, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
        lines.append(row(key, results[key]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    print(render(json.loads(args.results.read_text())))


if __name__ == "__main__":
    main()
