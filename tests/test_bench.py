"""The benchmark suite's own logic: the table covers every benchmark in bench/results.json, and the
memory benchmark's largest-seed-size search. (The figures themselves come from `make bench`;
tests/test_filtering.py runs bench/dedup.py at a small size.)"""

import json

from bench.boost import memory_entry
from bench.common import RESULTS
from bench.table import render

EXPECTED = {"teacher", "evaluate", "dedup", "overhead", "boost", "memory", "crash_resume"}


def test_results_hold_every_benchmark_and_the_table_shows_each():
    results = json.loads(RESULTS.read_text())
    assert EXPECTED <= set(results)
    for key, entry in results.items():
        assert entry["goal"] and entry["measured"] and entry["machine"], key
        if key != "memory":
            assert isinstance(entry["ratio"], (int, float)), key
    assert results["dedup"]["identical_decisions"] is True
    table = render(results)
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == [
        k for k in ("teacher", "evaluate", "dedup", "overhead", "boost", "memory", "crash_resume") if k in results
    ]


def _metrics(train: float, evaluate: float, generate: float, driver: float) -> dict:
    return {
        "phases": [
            {"key": "train iter_000", "peak_memory_mib": train},
            {"key": "evaluate iter_000", "peak_memory_mib": evaluate},
            {"key": "generate iter_000", "peak_memory_mib": generate},
        ],
        "driver_peak_rss_mib": driver,
    }


def test_memory_entry_finds_the_largest_seed_size_at_the_measured_slope(monkeypatch):
    monkeypatch.setattr(
        "os.sysconf", lambda name: {"SC_PAGE_SIZE": 2**20, "SC_PHYS_PAGES": 10_000}[name]
    )  # 10,000 MiB
    # evaluation grows until its batch is full; that bound counts, not a slope
    flat = memory_entry(_metrics(4000, 3000, 2000, 500), _metrics(4000, 3900, 2000, 500), 35, 700)
    assert flat["largest_seed_size"] is None and flat["vllm_phase_bound_mib"]["evaluate"] == 3900
    assert flat["predicted_peak_mib_at_13084"] == 4500
    # training grows 2 MiB per seed example, the driver 0.5: 4000 + 2(n-35) + 500 + 0.5(n-35) <= 10000
    growing = memory_entry(_metrics(4000, 3000, 2000, 500), _metrics(5330, 3000, 2000, 832.5), 35, 700)
    assert growing["slope_mib_per_seed_example"]["train"] == 2.0
    assert growing["largest_seed_size"] == 35 + int((10000 - 4500) / 2.5)
