"""The whole loop through the real CLI on a random-init tiny Llama: real training (HF Trainer),
real generation, real files; then resume after kill -9."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_in_process, read_jsonl, run_cli, tiny_boost_args

from bench.crash_resume import comparable, reference_of, trial
from llm2llm.records import FILES, SplitScores, problems
from llm2llm.report import time_split


def boost_args(tmp_path, data_dir, run="r", *extra):
    return tiny_boost_args(tmp_path, data_dir, run, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("loop")
    cli_in_process(*boost_args(tmp, data_dir), cwd=REPO)
    return tmp / "runs" / "r"


def test_loop_writes_every_artifact(finished_run):
    run = finished_run
    metrics = json.loads((run / "metrics.json").read_text())
    its = metrics["iterations"]
    assert [it["iteration"] for it in its] == [0, 1, 2] and metrics["complete"]
    assert its[0]["train_size"] == 14 and its[0]["seed_wrong"] > 0
    for it in its[:2]:
        decisions = read_jsonl(run / f"iter_{it['iteration']:03d}" / "filter_decisions.jsonl")
        assert it["generated"] == len(decisions) == it["kept"] + sum(it["dropped"].values())
        # per_wrong=2 samples for each wrong seed example
        assert len(read_jsonl(run / f"iter_{it['iteration']:03d}" / "teacher_outputs.jsonl")) == 2 * it["seed_wrong"]
    for a, b in zip(its, its[1:]):
        assert b["train_size"] == a["train_size"] + a["kept"]
        train_b = read_jsonl(run / f"iter_{b['iteration']:03d}" / "train.jsonl")
        kept = [
            d["example"]
            for d in read_jsonl(run / f"iter_{a['iteration']:03d}" / "filter_decisions.jsonl")
            if d["kept"]
        ]
        assert train_b == read_jsonl(run / f"iter_{a['iteration']:03d}" / "train.jsonl") + kept
    # every record the run wrote is the type llm2llm/records.py (and docs/run-directory.md) says it is
    for name, kind in FILES.items():
        for path in sorted(run.glob(f"iter_*/{name}")):
            assert [p for record in read_jsonl(path) for p in problems(record, kind)] == [], path
    for path in sorted(run.glob("iter_*/scores.json")):
        assert [p for split in json.loads(path.read_text()).values() for p in problems(split, SplitScores)] == []
    outputs = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert all(o["teacher"] == "tiny-llama" and len(o["teacher_fingerprint"]) == 16 for o in outputs)
    seed_ids = json.loads((run / "seed_ids.json").read_text())
    assert [ex["id"] for ex in read_jsonl(run / "iter_000" / "train.jsonl")] == seed_ids
    assert (run / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text()
    assert "| 2 | " in report and "plain fine-tuning" in report and "greedy" in report
    # the run hands over the student best on validation (ties: the earliest); it and the last stay on disk
    validation = [it["validation_accuracy"] for it in its]
    best = validation.index(max(validation))
    assert metrics["selected"] == {
        "iteration": best,
        "rule": "the best validation accuracy",
        "validation_accuracy": validation[best],
        "test_accuracy": its[best]["test_accuracy"],
        "student": f"iter_{best:03d}/student",
    }
    assert sorted(p.parent.name for p in run.glob("iter_*/student")) == sorted({f"iter_{best:03d}", "iter_002"})
    assert f"- selected student: iteration {best} (`iter_{best:03d}/student`)" in report
    assert [line.startswith(f"| {best} |") for line in report.splitlines() if line.endswith("| yes |")] == [True]
    # report.html: self-contained, every teacher answer and filter decision on it, escaped
    from markupsafe import escape

    page = (run / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and 'src="data:image/png;base64,' in page
    for it in its[:2]:
        decisions = read_jsonl(run / f"iter_{it['iteration']:03d}" / "filter_decisions.jsonl")
        for d in decisions:
            assert f">{d['reason']}</td>" in page
            if d["example"]:
                assert str(escape(d["example"]["text"])) in page
        for out in read_jsonl(run / f"iter_{it['iteration']:03d}" / "teacher_outputs.jsonl"):
            assert f"<pre>{escape(out['output'])}</pre>" in page
    for row in ("validation", "test"):
        n = its[-1][f"{row}_total"]
        assert f"n={n}</span>" in page
    # the confusion matrix of the selected student on test: its diagonal is what it got right
    confusion = json.loads((run / f"iter_{best:03d}" / "scores.json").read_text())["test"]["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == its[best]["test_total"]
    assert sum(row.get(gold, 0) for gold, row in confusion.items()) == its[best]["test_correct"]
    assert f"Confusion matrix: the selected student (iteration {best}) on test" in page
    # TensorBoard: the Trainer's curves per iteration, and the loop's scalars with the iteration as step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for it in its:
        curves = EventAccumulator(str(run / "tb" / f"iter_{it['iteration']:03d}"))
        curves.Reload()
        assert {"train/loss", "train/learning_rate"} <= set(curves.Tags()["scalars"])
        assert len(list((run / "tb" / f"iter_{it['iteration']:03d}").iterdir())) == 1  # one event file
    loop = EventAccumulator(str(run / "tb" / "loop"))
    loop.Reload()
    test_curve = [(e.step, round(e.tensor_proto.float_val[0], 4)) for e in loop.Tensors("accuracy/test")]
    assert test_curve == [(it["iteration"], it["test_accuracy"]) for it in its]
    assert [e.step for e in loop.Tensors("examples/kept")] == [0, 1]  # the last iteration generates nothing
    # finished phases have their timings
    assert set(its[0]["phase_seconds"]) == {"train", "evaluate", "generate", "filter", "merge", "report"}
    # where the time went: inside the engines, in the phase processes around them, in the driver
    assert set(its[0]["engine_seconds"]) == {"train", "evaluate", "generate"} and all(
        v > 0 for v in its[0]["engine_seconds"].values()
    )
    split = time_split(its[0], metrics["phases"])
    assert split["engines"] > 0 and split["process_other"] > 0 and split["driver"] >= 0
    assert abs(split["engines"] + split["process_other"] + split["driver"] - split["wall"]) < 0.05
    train_seconds = json.loads((run / "iter_000" / "train_log.json").read_text())["seconds"]
    assert set(train_seconds) == {"before_training", "training", "saving"} and train_seconds["before_training"] > 0
    # each phase process's peak memory: a Python process with torch loaded holds well over 100 MiB
    assert all(p["peak_memory_mib"] > 100 for p in metrics["phases"]), metrics["phases"]
    assert (
        metrics["driver_peak_rss_mib"] > 100
        and "peak memory (MiB, summed peak RSS)" in report
        and "inside the engines" in report
    )


def test_report_page_as_headless_chromium_draws_it(finished_run):
    """report.html opened from the file system in a real browser (Debian's chromium via Selenium); every
    assertion reads the rendered page: what is laid out and visible, the text a user sees."""
    from bench.report_screenshot import browser_available, headless_chromium, open_report

    if not browser_available():
        if os.environ.get("LLM2LLM_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromium-driver are required here (LLM2LLM_REQUIRE_BROWSER=1)")
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from llm2llm.intervals import wilson_interval

    its = json.loads((finished_run / "metrics.json").read_text())["iterations"]
    outputs = {
        " ".join(o["output"].split())
        for it in its[:-1]  # the last iteration asks the teacher nothing
        for o in read_jsonl(finished_run / f"iter_{it['iteration']:03d}" / "teacher_outputs.jsonl")
    }
    with headless_chromium() as driver:
        open_report(driver, finished_run / "report.html")
        # the plot is drawn: the embedded PNG decoded and laid out at a readable size
        plot = driver.find_element(By.TAG_NAME, "img")
        assert driver.execute_script("return arguments[0].naturalWidth", plot) > 300
        assert plot.is_displayed() and plot.size["width"] > 300 and plot.size["height"] > 150
        # the accuracy table shows the run's numbers: sizes, wrong seed examples, accuracy with its interval
        rows = driver.find_element(By.TAG_NAME, "table").find_elements(By.TAG_NAME, "tr")[1:]
        assert len(rows) == len(its)
        for tr, it in zip(rows, its):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            assert cells[0].split()[0] == str(it["iteration"])
            assert cells[1:3] == [str(it["train_size"]), str(it["seed_wrong"])]
            for cell, split in zip(cells[4:6], ("validation", "test")):
                correct, total = it[f"{split}_correct"], it[f"{split}_total"]
                low, high = wilson_interval(correct, total)
                assert cell == f"{100 * correct / total:.1f} [{100 * low:.1f}, {100 * high:.1f}] n={total}"
        # a wrong seed example: collapsed at first; opened, it shows the teacher's raw output
        item = next(i for i in driver.find_elements(By.CSS_SELECTOR, "details.item") if "(student wrong)" in i.text)
        raw = item.find_elements(By.TAG_NAME, "pre")[1]
        assert not raw.is_displayed()
        item.find_element(By.TAG_NAME, "summary").click()
        item.find_element(By.XPATH, "./details/summary").click()  # the teacher's prompt and answer
        assert raw.is_displayed() and " ".join(raw.text.split()) in outputs
        # the search box hides the examples that do not match, and shows them all again when cleared
        items = driver.find_elements(By.CSS_SELECTOR, "details.item")
        query = item.find_element(By.TAG_NAME, "summary").text.split(": ", 1)[1].split(" (student wrong)")[0]
        matching = [query.lower() in i.get_attribute("textContent").lower() for i in items]
        box = driver.find_element(By.ID, "search")
        box.send_keys(query)
        assert [i.is_displayed() for i in items] == matching and 1 <= sum(matching) < len(items)
        box.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)
        assert all(i.is_displayed() for i in items)


def test_rerun_of_a_finished_run_does_no_work(finished_run, data_dir):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file() and p.name not in ("log.txt",)}
    tmp = finished_run.parent.parent
    proc = run_cli(*boost_args(tmp, data_dir), cwd=REPO)
    assert "report:" in proc.stdout
    changed = [
        p
        for p, t in before.items()
        if p.stat().st_mtime_ns != t and p.name not in ("metrics.json", "report.md", "accuracy.png", "report.html")
    ]
    assert changed == []
    assert "trained on" not in proc.stderr and "Loading weights" not in proc.stderr


def test_export_hands_over_the_selected_training_set_and_student(finished_run, tmp_path):
    from datasets import Dataset, load_from_disk
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = json.loads((finished_run / "metrics.json").read_text())
    selected = metrics["selected"]["iteration"]
    seed_ids = set(json.loads((finished_run / "seed_ids.json").read_text()))
    teacher = json.loads((finished_run / "models.json").read_text())["teacher"]
    # the selected iteration, and the last one by name (the tiny student may select iteration 0)
    for name, iteration, extra in (("selected", selected, ()), ("last", 2, ("--iteration", "2"))):
        out = tmp_path / name
        proc = cli_in_process("export", str(finished_run), "--output", str(out), *extra, cwd=REPO)
        assert proc.stdout.strip() == f"exported: {out}"
        rows = list(load_from_disk(str(out / "data" / "dataset")))
        train = read_jsonl(finished_run / f"iter_{iteration:03d}" / "train.jsonl")
        assert [(r["id"], r["text"], r["label"]) for r in rows] == [(e["id"], e["text"], e["label"]) for e in train]
        assert Dataset.from_parquet(str(out / "data" / "train.parquet"))["id"] == [r["id"] for r in rows]
        assert read_jsonl(out / "data" / "train.jsonl") == rows
        for row in rows:  # where each example came from
            if row["id"] in seed_ids:
                assert row["source"] == "seed" and row["parent_id"] is None and row["teacher"] is None
            else:
                assert row["source"] == "llm2llm" and row["parent_id"] in seed_ids and row["iteration"] < iteration
                assert (row["teacher"], row["teacher_fingerprint"]) == (teacher["name"], teacher["fingerprint"])
        card = (out / "data" / "README.md").read_text()
        assert f"The training set of iteration {iteration} of the llm2llm run `r`" in card
        for it in metrics["iterations"][:iteration]:  # the filter counts behind the generated examples
            assert f"| {it['iteration']} | {it['generated']} | {it['kept']} | " in card
        # the student: the run's own weights, in a folder transformers loads, with its card
        student = finished_run / f"iter_{iteration:03d}" / "student"
        exported, original = load_file(out / "model" / "model.safetensors"), load_file(student / "model.safetensors")
        assert exported.keys() == original.keys() and all(exported[k].equal(original[k]) for k in original)
        AutoModelForCausalLM.from_pretrained(out / "model")
        AutoTokenizer.from_pretrained(out / "model")
        assert not (out / "model" / "train_log.json").exists() and (out / "config.yaml").exists()
        assert f"The student of iteration {iteration}, selected by" in (out / "model" / "README.md").read_text()
    assert (
        len(list(Dataset.from_parquet(str(tmp_path / "last" / "data" / "train.parquet"))))
        == metrics["iterations"][2]["train_size"]
    )
    # a second export into a folder that holds one is refused, and changes nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "last").rglob("*"))
    proc = cli_in_process("export", str(finished_run), "--output", str(tmp_path / "last"), cwd=REPO, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "exists and is not empty" in proc.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "last").rglob("*")) == before


@pytest.mark.vllm
def test_exported_student_answers_in_vllm_as_the_run_evaluated_it(finished_run, tmp_path):
    """The exported model folder is what a user serves: vLLM loads it and, greedy, gives the answers the
    run's own evaluation recorded for the selected iteration (the tiny profile evaluates on transformers)."""
    pytest.importorskip("vllm")
    from llm2llm.config import SamplingConfig, VLLMConfig
    from llm2llm.engines import EngineSpec
    from llm2llm.generation import generate_cached

    selected = json.loads((finished_run / "metrics.json").read_text())["selected"]["iteration"]
    cli_in_process("export", str(finished_run), "--output", str(tmp_path / "out"), cwd=REPO)
    predictions = read_jsonl(finished_run / f"iter_{selected:03d}" / "predictions.jsonl")
    evaluated = [p for p in predictions if p["split"] == "test"][:8]
    requests = [{"key": p["key"], "prompt": p["prompt"]} for p in evaluated]
    options = VLLMConfig(max_model_len=512, cpu_kv_cache_gib=1).model_dump()
    spec = EngineSpec("vllm", tmp_path / "out" / "model", vllm=options)
    budget = SamplingConfig(max_new_tokens=6)  # the tiny profile's eval_max_new_tokens
    answers, _ = generate_cached(spec, requests, tmp_path / "answers.jsonl", budget, 8, "exported")
    agree = sum(answers[p["key"]] == p["output"] for p in evaluated)
    assert agree >= len(evaluated) - 1, [(answers[p["key"]], p["output"]) for p in evaluated]


def test_export_refuses_an_unfinished_run_and_leaves_nothing(finished_run, tmp_path):
    import shutil

    run = tmp_path / "killed"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("student"))
    (run / "iter_002" / "scores.json").unlink()  # killed while iteration 2 was evaluated: its report
    metrics = json.loads((run / "metrics.json").read_text())  # is that of iteration 1
    metrics.update(complete=False, iterations=metrics["iterations"][:2])
    (run / "metrics.json").write_text(json.dumps(metrics))
    proc = cli_in_process("export", str(run), "--output", str(tmp_path / "out"), cwd=REPO, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is not finished (2 of 3 iterations scored)" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_another_run_with_the_same_teacher_and_prompts_asks_the_teacher_nothing(finished_run, data_dir):
    tmp = finished_run.parent.parent
    cli_in_process(*boost_args(tmp, data_dir, "again", "--iterations", "1"), cwd=REPO)
    stats = json.loads((tmp / "runs" / "again" / "iter_000" / "teacher_stats.json").read_text())
    assert stats["requests"] > 0 and stats["from_cache"] == stats["requests"] and stats["generated"] == 0
    first = read_jsonl(finished_run / "iter_000" / "teacher_outputs.jsonl")
    assert sorted(
        map(json.dumps, read_jsonl(tmp / "runs" / "again" / "iter_000" / "teacher_outputs.jsonl"))
    ) == sorted(map(json.dumps, first))


def test_rerun_with_another_config_is_refused(finished_run, data_dir):
    tmp = finished_run.parent.parent
    proc = cli_in_process(*boost_args(tmp, data_dir, "r", "--seed-size", "21"), cwd=REPO, check=False)
    assert proc.returncode == 2
    assert "already exists with a different config (data.seed_size: 14.0 in the run, 21.0 now)" in proc.stderr


def kill_when(path_glob: str, run_dir: Path, args, timeout=300) -> bool:
    """Start boost, SIGKILL it as soon as a file matching path_glob appears; True if it was killed mid-run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if list(run_dir.glob(path_glob)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    return False


def test_kill_9_in_each_phase_then_rerun_matches_uninterrupted(finished_run, tmp_path, data_dir):
    args = boost_args(tmp_path, data_dir)
    run_dir = tmp_path / "runs" / "r"
    # Points inside the phases of iterations 0 and 1: generation (records streaming), training
    # (the temporary student folder), evaluation (predictions streaming), the merged train set.
    for marker in [
        "iter_000/teacher_outputs.jsonl",
        "iter_001/.student.tmp",
        "iter_001/predictions.jsonl",
        "iter_002/train.jsonl",
        "iter_002/.student.tmp",
    ]:
        assert kill_when(marker, run_dir, args), f"run finished before reaching {marker}"
        assert (
            not (run_dir / "metrics.json").exists()
            or not json.loads((run_dir / "metrics.json").read_text())["complete"]
        )
    run_cli(*args, cwd=REPO)
    assert comparable(run_dir) == comparable(finished_run)
    assert [p for p in run_dir.rglob(".*") if p.name != ".lock"] == []  # no stray temp files


def test_random_kill_inside_a_phase_then_reruns_match_uninterrupted(finished_run, data_dir, tmp_path):
    """One trial of bench/crash_resume.py (`make crash-resume` runs 20): a SIGKILL at a random moment
    inside the teacher's generate phase, reruns until done, the run dir compared with the uninterrupted one."""
    result = trial(
        0, "0/generate", reference_of(finished_run), random.Random(0), tmp_path, str(data_dir), iterations=2
    )
    assert result["killed"] and result["killed_in"], result  # aimed at `slot`; a faster rerun may land it later
    assert result["identical"], result


def cache_answers(cache: Path) -> dict[str, str]:
    """{key: answer} of a generation cache folder; every file whole and named by its key's hash."""
    import hashlib

    answers = {}
    for path in cache.glob("*/*.json"):
        record = json.loads(path.read_text())["entry"]  # {"mac": ..., "entry": ...}
        assert path.parent.name + path.stem == hashlib.sha256(record["key"].encode()).hexdigest(), path
        answers[record["key"]] = record["output"]
    return answers


def test_four_boosts_sharing_runs_killed_and_rerun_each_match_a_run_made_alone(finished_run, tmp_path, data_dir):
    """Issue 18: four boosts at once in one runs/ (one generation cache, asked the same prompts at the
    same moments), each SIGKILLed at its own random moment and all rerun at once until done: each run
    then holds what the run made alone holds, and the shared cache holds the solo run's answers,
    each once and whole, and no temporary file."""
    runs = tmp_path / "runs"
    names = [f"c{i}" for i in range(4)]
    solo_seconds = json.loads((finished_run / "metrics.json").read_text())["wall_seconds"]
    rng = random.Random(18)
    kill_after = {name: rng.uniform(0.1, 2.0) * solo_seconds for name in names}  # four at once run slower

    def start(name):
        return subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", *boost_args(tmp_path, data_dir, name)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    started = time.monotonic()
    procs = {name: start(name) for name in names}
    while any(p.poll() is None for p in procs.values()):
        for name, proc in procs.items():
            if proc.poll() is None and time.monotonic() - started >= kill_after[name]:
                proc.send_signal(signal.SIGKILL)
        time.sleep(0.05)
    killed = [name for name, proc in procs.items() if proc.returncode == -signal.SIGKILL]
    assert len(killed) >= 2, kill_after  # most were killed mid-run (the rest finished first)
    for _ in range(4):  # rerun the unfinished ones, all at once, until each finishes
        todo = [n for n in names if not (runs / n / "metrics.json").exists()
                or not json.loads((runs / n / "metrics.json").read_text())["complete"]]  # fmt: skip
        if not todo:
            break
        for proc in [start(name) for name in todo]:
            proc.wait()
    alone = comparable(finished_run)
    for name in names:
        got = comparable(runs / name)
        assert got["metrics"].pop("run") == name
        assert got == {**alone, "metrics": {k: v for k, v in alone["metrics"].items() if k != "run"}}, name
        assert [p for p in (runs / name).rglob(".*") if p.name != ".lock"] == []
    shared = runs / "generation-cache"
    outputs = finished_run.glob("iter_*/teacher_outputs.jsonl")
    asked = {r["key"]: r["output"] for path in outputs for r in read_jsonl(path)}
    assert cache_answers(shared) == asked  # the solo run's answers, each once
    assert not [p for p in shared.rglob("*.tmp")]


def test_lora_and_continued_training(tmp_path, data_dir, tiny_model):
    cli_in_process(
        *boost_args(
            tmp_path,
            data_dir,
            "lora",
            "--iterations",
            "1",
            "--set",
            "train.lora=true",
            "--set",
            "loop.continue_training=true",
            "--set",
            "train.lora_target_modules=[q_proj,v_proj]",
        ),
        cwd=REPO,
    )
    run = tmp_path / "runs" / "lora"
    assert (run / "iter_001" / "student" / "adapter_config.json").exists()
    log = json.loads((run / "iter_001" / "student" / "train_log.json").read_text())
    assert log["init_from"].endswith("iter_000/student")
    assert len(json.loads((run / "metrics.json").read_text())["iterations"]) == 2
    # export: a LoRA student merged into its base is a plain model folder; or the adapter, base named
    from transformers import AutoModelForCausalLM

    cli_in_process("export", str(run), "--output", str(tmp_path / "merged"), "--iteration", "1", cwd=REPO)
    merged = tmp_path / "merged" / "model"
    assert not (merged / "adapter_config.json").exists() and (merged / "config.json").exists()
    AutoModelForCausalLM.from_pretrained(merged)
    assert "LoRA adapter merged into its base `tiny-llama`" in (merged / "README.md").read_text()
    cli_in_process(
        "export", str(run), "--output", str(tmp_path / "adapter"), "--iteration", "1", "--lora", "adapter", cwd=REPO
    )
    assert (tmp_path / "adapter" / "model" / "adapter_config.json").exists()
    card = (tmp_path / "adapter" / "model" / "README.md").read_text()
    assert "LoRA adapter; load it on its base `tiny-llama`" in card


@pytest.mark.parametrize("rule", ["any", "majority"])
def test_sampled_seed_evaluation_judges_each_example_by_its_samples(tmp_path, data_dir, tiny_model, rule):
    """seed_eval: several sampled answers per seed example (each its own key and seed) in the same
    engine start as the greedy test answers; wrong = any / at least half of them wrong."""
    from llm2llm.config import DataConfig
    from llm2llm.data import load_task_data

    cli_in_process(
        *boost_args(
            tmp_path,
            data_dir,
            "s",
            "--iterations",
            "0",
            "--set",
            "seed_eval.temperature=1.0",
            "--set",
            "seed_eval.samples=3",
            "--set",
            f"seed_eval.wrong_if={rule}",
        ),
        cwd=REPO,
    )
    it = tmp_path / "runs" / "s" / "iter_000"
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    predictions = read_jsonl(it / "predictions.jsonl")
    seed = {ex["id"]: ex for ex in read_jsonl(it / "train.jsonl")}
    by_split = {split: [p for p in predictions if p["split"] == split] for split in ("test", "validation", "seed")}
    assert len(by_split["seed"]) == 3 * len(seed) and len(by_split["test"]) == len(by_split["validation"]) == 20
    assert all(p["finish_reason"] in ("stop", "length") for p in predictions)
    wrong = {
        i: sum(not task.score(p["output"], seed[i]).correct for p in by_split["seed"] if p["id"] == i) for i in seed
    }
    expected = sorted(i for i, w in wrong.items() if (w >= 2 if rule == "majority" else w >= 1))
    scores = json.loads((it / "scores.json").read_text())
    assert sorted(scores["seed"]["wrong_ids"]) == expected
    assert scores["seed"]["samples"] == 3 and scores["seed"]["sampled_answers"] == 3 * len(seed)
    # the three samples of one example differ somewhere (sampled at T=1 with their own seeds), test answers are greedy
    assert len({p["output"] for p in by_split["seed"]}) > len(seed)
    metrics = json.loads((tmp_path / "runs" / "s" / "metrics.json").read_text())
    assert metrics["iterations"][0]["validation_accuracy"] is not None
    assert (
        f"3 answers per seed example, wrong if {rule} of them are wrong"
        in (tmp_path / "runs" / "s" / "report.md").read_text()
    )


def test_results_table_reads_the_run_metrics(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    out = cli_in_process("results", str(finished_run), cwd=REPO).stdout
    row = next(line for line in out.splitlines() if line.startswith("| r |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "transformers/transformers"
    assert cells[5:] == [f"{100 * it['test_accuracy']:.1f}" for it in metrics["iterations"]]
    # SNIPS has a validation split: every iteration is scored on it too, and `--split validation` shows it
    out = cli_in_process("results", str(finished_run), "--split", "validation", cwd=REPO).stdout
    row = next(line for line in out.splitlines() if line.startswith("| r |"))
    assert [c.strip() for c in row.strip("|").split("|")][5:] == [
        f"{100 * it['validation_accuracy']:.1f}" for it in metrics["iterations"]
    ]
    assert all(it["validation_total"] == 20 for it in metrics["iterations"])


def test_a_full_disk_is_one_line_and_the_rerun_after_freeing_space_finishes(tmp_path, data_dir):
    """The run directory on a 6 MiB tmpfs (a private mount namespace: root and `unshare -m`): the
    first student checkpoint (12 MiB) does not fit. One error line names the phase, the folder, what
    is free and what the checkpoint needs; no student is left as if trained; after the file system
    grows (remount, the same files) the same command finishes the run."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare -m for a size-limited tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    boost = " ".join([sys.executable, "-m", "launcher.cli", *boost_args(disk, data_dir, "full", "--iterations", "1")])
    script = f"""
mount -t tmpfs -o size=6m tmpfs {disk} || exit 90
cd {REPO}
{boost} > {tmp_path}/out1 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1
find {disk} -name 'student' > {tmp_path}/students1
mount -o remount,size=200m {disk}
{boost} > {tmp_path}/out2 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2
cp {disk}/runs/full/metrics.json {tmp_path}/metrics.json
find {disk}/runs/full -name '.*' ! -name .lock > {tmp_path}/hidden2
"""
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=600)
    if proc.returncode == 90:
        pytest.skip("no tmpfs mount here")
    first = (tmp_path / "err1").read_text()
    errors = [line for line in first.splitlines() if line.startswith("error:")]
    assert (tmp_path / "rc1").read_text().strip() == "1" and len(errors) == 1, first[-2000:]
    assert errors[0].startswith(f"error: train iter_000: no space left on the device writing {disk}/runs/full, ")
    assert "free there (it needs about 12.3 MiB)" in errors[0] and "rerun the same command to resume" in errors[0]
    assert (tmp_path / "students1").read_text() == ""  # nothing that looks trained
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["iterations"]) == 2
    assert (tmp_path / "hidden2").read_text() == ""  # the killed attempt's temp files are gone


def test_a_disk_that_fills_during_evaluation_or_generation_is_one_line_and_the_rerun_finishes(tmp_path, data_dir):
    """The disk fills up (a filler file written to the last byte) right after training, then, on the
    rerun, right after evaluation: each attempt stops with one error line saying no space is left
    and how to resume, leaves no partial record that a rerun takes for finished, and the third
    attempt, with the space freed, finishes the run with every record once."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare -m for a size-limited tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "runs" / "fills"
    boost = " ".join([sys.executable, "-m", "launcher.cli", *boost_args(disk, data_dir, "fills", "--iterations", "1")])
    script = f"""
mount -t tmpfs -o size=64m tmpfs {disk} || exit 90
cd {REPO}
fill_after() {{  # once phase slot $1 is recorded, write a file until the disk is full
  while kill -0 $2 2>/dev/null && ! grep -qs '"key": "'$1'"' {run}/timings.jsonl; do sleep 0.01; done
  dd if=/dev/zero of={disk}/filler bs=1M 2>/dev/null; echo $1 >> {tmp_path}/filled
}}
{boost} > {tmp_path}/out1 2> {tmp_path}/err1 & pid=$!; fill_after 0/train $pid; wait $pid; echo $? > {tmp_path}/rc1
rm -f {disk}/filler
{boost} > {tmp_path}/out2 2> {tmp_path}/err2 & pid=$!; fill_after 0/evaluate $pid; wait $pid; echo $? > {tmp_path}/rc2
rm -f {disk}/filler
{boost} > {tmp_path}/out3 2> {tmp_path}/err3; echo $? > {tmp_path}/rc3
cp -r {run} {tmp_path}/run
"""
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=600)
    if proc.returncode == 90:
        pytest.skip("no tmpfs mount here")
    assert (tmp_path / "filled").read_text().split() == ["0/train", "0/evaluate"]
    for attempt, phase in ((1, "evaluate"), (2, "generate")):
        err = (tmp_path / f"err{attempt}").read_text()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert (tmp_path / f"rc{attempt}").read_text().strip() == "1" and len(errors) == 1, err[-3000:]
        assert errors[0].startswith(f"error: {phase} iter_000: no space left on the device writing {run}"), errors[0]
        assert " MiB free there" in errors[0], errors[0]
        assert errors[0].endswith("rerun the same command to resume"), errors[0]
    timings = read_jsonl(tmp_path / "run" / "timings.jsonl")
    assert (tmp_path / "rc3").read_text().strip() == "0", (tmp_path / "err3").read_text()[-3000:]
    slots = [t["key"] for t in timings]
    assert len(slots) == len(set(slots)) and {"0/evaluate", "0/generate", "1/evaluate"} <= set(slots)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["iterations"]) == 2
    for name in ("predictions.jsonl", "teacher_outputs.jsonl"):
        keys = [r["key"] for r in read_jsonl(tmp_path / "run" / "iter_000" / name)]
        assert keys and len(keys) == len(set(keys)), name  # every record once, none torn
    assert [p for p in (tmp_path / "run").rglob(".*") if p.name != ".lock"] == []
