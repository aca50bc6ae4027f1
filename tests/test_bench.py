"""The benchmark suite's own logic: the table covers every benchmark in bench/results.json, and the
memory benchmark's largest-seed-size search. (The figures themselves come from `make bench`;
tests/test_filtering.py runs bench/dedup.py at a small size.)"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.boost import memory_entry
from bench.common import REPO, RESULTS
from bench.methods import (
    auggpt_per_example,
    compare_folder,
    drop_weights,
    llm2llm_budget,
    paraphrase_matched,
    run_name,
    token_matched,
)
from bench.table import ORDER, render
from llm2llm.config import DataConfig
from llm2llm.data import load_task_data

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
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == [k for k in ORDER if k in results]


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


def test_gpu_check_dry_run_names_what_is_missing_and_plans_for_an_h200(tmp_path, smollm2):
    """bench/gpu_check.sh --dry-run on this CPU machine: one line per precondition (here the staged
    folder is empty: wheels, model shape and data missing; no GPU; a free-space need no disk meets), the
    commands it would run, and the gpu-check profile planned for the GPU it is for."""
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        # the free-space need is set past any disk so the line does not depend on the machine running the test
        env={**os.environ, "GPU_CHECK_STAGE": str(tmp_path / "stage"), "GPU_CHECK_MIN_FREE_GIB": "1e9"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("missing  wheels:") and "make gpu-check-prepare" in line for line in lines)
    assert any(line.startswith("no gpu   gpu:") for line in lines)
    assert any(line.startswith("ok       deepspeed:") for line in lines)
    assert sum(line.startswith("would run (boost-zero") for line in lines) == 1
    trains = [line for line in lines if line.startswith("would run (train-zero")]
    assert [line.split()[2] for line in trains] == [
        "(train-zero2-nockpt):", "(train-zero2-ckpt):", "(train-zero3-nockpt):", "(train-zero3-ckpt):"
    ]  # fmt: skip
    assert "--round-trip" in trains[-1] and not any("--round-trip" in line for line in trains[:-1])
    assert "train.deepspeed=zero3" in proc.stdout and "ZeRO-2 (zero2)" in proc.stdout
    assert any(line.startswith("missing  disk:") and "(needs 1e+09)" in line for line in lines)
    assert lines[-1] == "dry run: not ready: wheels, model shape, data, disk; plan for 1xH200:141 ok"


def test_method_runs_are_named_as_boost_names_them_and_one_shot_takes_llm2llm_budget(tmp_path):
    """bench/methods.py names a run as boost would by default (so a sweep without a seed size resumes
    boost's own runs), adds the size and an ablation's tag, and gives one-shot the teacher budget of
    the same seed's finished llm2llm run: every example it asked for, over all its iterations."""
    from llm2llm.config import resolve_config

    for method, seed in (("llm2llm", 0), ("eda", 2), ("one-shot", 1)):
        overrides = {"data": {"dataset": "snips", "rng_seed": seed}, "loop": {"method": method}}
        assert run_name("snips", "tiny", method, seed, None) == resolve_config("tiny", overrides).run
    named = run_name("snips", "cpu-qwen", "one-shot", 2, 35, "continued")
    assert named == "snips-cpu-qwen-n35-continued-one-shot-seed2"
    # a tagged sweep's closing table does not overwrite the untagged sweep's (or another tag's)
    assert compare_folder("runs/edge", "") == "runs/edge/compare"
    assert compare_folder("runs/edge", "para") == "runs/edge/compare-tag-para"
    run = tmp_path / "snips-cpu-qwen"
    run.mkdir()
    assert llm2llm_budget(run) is None  # no metrics yet
    iterations = [{"generated": 27}, {"generated": 12}, {"generated": None}]  # the last iteration asks nothing
    (run / "metrics.json").write_text(json.dumps({"complete": False, "iterations": iterations[:2]}))
    assert llm2llm_budget(run) is None  # an unfinished run's budget is not its final one
    (run / "metrics.json").write_text(json.dumps({"complete": True, "iterations": iterations}))
    assert llm2llm_budget(run) == 39


def test_auggpt_matched_in_tokens_scales_the_example_matched_count_by_the_token_ratio(tmp_path):
    """--match-tokens: an AugGPT run that asked 4 paraphrases of each of 14 seed examples and got 880
    output tokens, against an llm2llm run whose teacher wrote 1540 (short seed fragments, long new
    examples), gets 4 x 1540 / 880 = 7 per seed example; an unfinished run is refused, not guessed."""

    def run(name: str, complete: bool, iterations: list) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "seed_ids.json").write_text(json.dumps([f"id{i}" for i in range(14)]))
        (folder / "metrics.json").write_text(json.dumps({"complete": complete, "iterations": iterations}))
        return folder

    asked = {"generated": 60, "teacher_requests": {"completion_tokens": 1000}}
    llm2llm = run(
        "llm2llm", True, [asked, {"generated": 0, "teacher_requests": {"completion_tokens": 540}}, {"generated": None}]
    )
    probe = run(
        "auggpt", True, [{"generated": 56, "teacher_requests": {"completion_tokens": 880}}, {"generated": None}]
    )
    assert token_matched(llm2llm, probe) == 7
    unfinished = run("auggpt-unfinished", False, [{"generated": 56, "teacher_requests": {"completion_tokens": 880}}])
    with pytest.raises(SystemExit, match="must both have finished"):
        token_matched(llm2llm, unfinished)


def test_a_paraphrase_run_sets_auggpts_count_from_its_own_paraphrases(tmp_path, tiny_model, data_dir):
    """--match-tokens against a teacher.paraphrase run needs no probe run: three answers of the same length
    (two to the task's paraphrase requests for the seed examples, one to a request for similar examples, 2
    asked each) cost 6 examples' tokens over 2 seed examples, so AugGPT asks for 3 paraphrases of each,
    whatever the tokenizer counts. A run without paraphrase requests, or an unfinished one, has no count."""
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    seed = [
        {"id": "a", "text": "play some queen", "label": "PlayMusic"},
        {"id": "b", "text": "rate it 5", "label": "RateBook"},
    ]
    run = tmp_path / "run"
    (run / "iter_000").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  dataset: snips\n")
    (run / "seed_ids.json").write_text(json.dumps(["a", "b"]))
    (run / "iter_000" / "train.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in seed))
    (run / "models.json").write_text(json.dumps({"teacher": {"path": str(tiny_model)}}))
    prompts = [f"<chat>{task.teacher_paraphrase(ex, 'chat', 2)}</chat>" for ex in seed] + ["Write 2 new"]
    records = [
        {
            "key": f"k{i}",
            "parent_id": "ab"[i % 2],
            "prompt": prompt,
            "asked": 2,
            "output": "1. play queen\n2. play abba",
        }
        for i, prompt in enumerate(prompts)
    ]
    (run / "iter_000" / "teacher_outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    iterations = [{"generated": 6, "teacher_requests": {"completion_tokens": 123}}, {"generated": None}]
    (run / "metrics.json").write_text(json.dumps({"complete": False, "iterations": iterations}))
    assert paraphrase_matched(run) is None
    (run / "metrics.json").write_text(json.dumps({"complete": True, "iterations": iterations}))
    assert paraphrase_matched(run) == 3
    # --probe-tag: an AugGPT run of the same seed whose paraphrases came out longer (2 asked per seed example,
    # 41 tokens) sets the rate instead: 2 x 123 / 41 = 6 per seed example
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "seed_ids.json").write_text(json.dumps(["a", "b"]))
    probe_iterations = [{"generated": 4, "teacher_requests": {"completion_tokens": 41}}, {"generated": None}]
    (probe / "metrics.json").write_text(json.dumps({"complete": True, "iterations": probe_iterations}))
    assert auggpt_per_example(run, probe, own_rate=True) == 3
    assert auggpt_per_example(run, probe, own_rate=False) == 6
    records[0]["prompt"] = records[1]["prompt"] = "Write 2 new"
    (run / "iter_000" / "teacher_outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert paraphrase_matched(run) is None
    assert auggpt_per_example(run, probe, own_rate=True) == 6  # no paraphrases of its own: the probe's rate


def test_drop_weights_frees_a_finished_runs_student_and_keeps_its_records(tmp_path):
    """--drop-weights: a finished run loses its student's weights and nothing else; an unfinished one,
    which its rerun resumes from, keeps them."""
    run = tmp_path / "run"
    student = run / "iter_001" / "student"
    student.mkdir(parents=True)
    (student / "model.safetensors").write_bytes(b"w" * 4096)
    (student / "config.json").write_text("{}")
    (run / "iter_001" / "predictions.jsonl").write_text("")
    (run / "metrics.json").write_text(json.dumps({"complete": False, "iterations": []}))
    assert drop_weights(run) == 0 and (student / "model.safetensors").exists()
    (run / "metrics.json").write_text(json.dumps({"complete": True, "iterations": []}))
    assert drop_weights(run) == 4096
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert left == ["iter_001/predictions.jsonl", "iter_001/student/config.json", "metrics.json"]
