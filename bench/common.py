"""What every benchmark shares: timing by median over repeats, the machine it ran on, and one
entry per benchmark in bench/results.json (merged, so each script can be rerun on its own).

An entry: {"ratio", "goal", "baseline": {"name", "median_s", "runs_s"}, "llm2llm": {...}, "sizes",
"machine", "measured", ...details}. `ratio` is always "bigger is better" for llm2llm.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results.json"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {gib:.0f} GiB, no GPU" if not _has_gpu() else f"{cpu}, GPU"


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """Run fn() `repeats` times; returns (median seconds, all seconds, the last result)."""
    runs, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(round(time.perf_counter() - start, 3))
    return statistics.median(runs), runs, result


def side(name: str, runs: list[float], **details) -> dict:
    return {"name": name, "median_s": round(statistics.median(runs), 3), "runs_s": runs, **details}


def record(key: str, entry: dict, results: Path = RESULTS) -> dict:
    entry = {**entry, "machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M")}
    data = json.loads(results.read_text()) if results.exists() else {}
    data[key] = entry
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, results)
    return entry
