"""The baselines as run methods (plain, one-shot, AugGPT, EDA) end to end on a random-init tiny
Llama through the real CLI, EDA over the real WordNet 3.0 files, and `llm2llm compare` over the
run directories made here."""

import json
import random
import re

import pytest
from conftest import REPO, cli_in_process, read_jsonl

from llm2llm.eda import EDA, load_wordnet
from llm2llm.errors import UserError

SENTENCE = "Play some relaxing jazz music by Miles Davis on Spotify this evening"


def boost(tmp, data_dir, method, *extra):
    return cli_in_process(
        "boost",
        "--profile",
        "tiny",
        "--runs-dir",
        str(tmp / "runs"),
        "--data-dir",
        str(data_dir),
        "--method",
        method,
        *extra,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("methods")
    for method in ("plain", "one-shot", "auggpt", "eda"):
        boost(tmp, data_dir, method)
    boost(tmp, data_dir, "plain", "--rng-seed", "1")
    return tmp / "runs"


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_plain_fine_tuning_is_iteration_0_alone(runs):
    run = runs / "snips-tiny-plain"
    m = metrics(run)
    assert m["method"] == "plain" and m["complete"] and len(m["iterations"]) == 1
    assert not (run / "iter_001").exists() and not (run / "iter_000" / "teacher_outputs.jsonl").exists()
    assert m["teacher_tokens"] == 0
    assert (runs / "snips-tiny-plain-seed1" / "metrics.json").exists()  # the seed is part of the default run name


def test_one_shot_asks_for_all_iterations_at_once_from_the_wrong_seed_examples(runs):
    run = runs / "snips-tiny-one-shot"
    config = __import__("yaml").safe_load((run / "config.yaml").read_text())
    per_wrong = config["teacher"]["per_wrong"] * config["loop"]["iterations"]
    wrong = json.loads((run / "iter_000" / "scores.json").read_text())["seed"]["wrong_ids"]
    requests = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert len(requests) == len(wrong) * per_wrong and {r["parent_id"] for r in requests} == set(wrong)
    kept = [d["example"] for d in read_jsonl(run / "iter_000" / "filter_decisions.jsonl") if d["kept"]]
    assert len(read_jsonl(run / "iter_001" / "train.jsonl")) == 14 + len(kept)
    m = metrics(run)
    assert m["complete"] and len(m["iterations"]) == 2 and not (run / "iter_001" / "teacher_outputs.jsonl").exists()
    assert m["teacher_tokens"] > 0


def test_auggpt_paraphrases_every_seed_example(runs):
    run = runs / "snips-tiny-auggpt"
    seed = read_jsonl(run / "iter_000" / "train.jsonl")
    requests = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert len(requests) == len(seed) * 4  # baselines.auggpt_per_example, right or wrong
    for ex in seed:
        prompts = [r["prompt"] for r in requests if r["parent_id"] == ex["id"]]
        assert len(prompts) == 4 and all(f"- {ex['text']}\n-" in p and "in different words" in p for p in prompts)
    labels = {ex["id"]: ex["label"] for ex in seed}
    for decision in read_jsonl(run / "iter_000" / "filter_decisions.jsonl"):
        if decision["example"]:
            assert decision["example"]["label"] == labels[decision["example"]["parent_id"]]
    assert metrics(run)["complete"]


def test_eda_adds_num_aug_edits_per_seed_example_with_the_parents_label(runs):
    run = runs / "snips-tiny-eda"
    seed = {ex["id"]: ex for ex in read_jsonl(run / "iter_000" / "train.jsonl")}
    decisions = read_jsonl(run / "iter_000" / "filter_decisions.jsonl")
    assert len(decisions) == 9 * len(seed)  # the EDA paper's default num_aug
    assert {d["reason"] for d in decisions} <= {"kept", "duplicate"}  # near-copies are the point of EDA
    for d in decisions:
        parent = seed[d["example"]["parent_id"]]
        assert d["example"]["label"] == parent["label"]
        assert d["example"]["text"] == d["example"]["text"].lower()
    assert not (run / "iter_000" / "teacher_outputs.jsonl").exists() and metrics(run)["teacher_tokens"] == 0


def test_eda_is_deterministic_under_a_seed_and_uses_real_wordnet():
    eda = EDA(load_wordnet(), alpha=0.1, num_aug=9)
    first = eda.augment(SENTENCE, random.Random("0/eda/x"))
    assert first == eda.augment(SENTENCE, random.Random("0/eda/x"))
    assert first != eda.augment(SENTENCE, random.Random("1/eda/x"))
    assert len(first) == 9
    # WordNet 3.0 content, not a stand-in: synsets of 'happy' and 'car'
    assert {"felicitous", "glad"} <= set(eda.synonyms("happy"))
    assert {"automobile", "auto", "machine", "motorcar"} <= set(eda.synonyms("car"))
    assert eda.wordnet.get_version() == "3.0"


def test_eda_synonym_replacement_swaps_a_non_stop_word_for_a_wordnet_synonym():
    eda = EDA(load_wordnet())
    words = "play some relaxing jazz music".split()
    for seed in range(20):
        out = eda.synonym_replacement(words, 1, random.Random(seed))
        changed = [(a, b) for a, b in zip(words, out[: len(words)]) if a != b]
        if len(out) == len(words) and changed:  # a multi-word synonym changes the length
            ((original, synonym),) = changed
            assert original != "some" and synonym in eda.synonyms(original)


def test_eda_without_wordnet_says_how_to_install_it(tmp_path, monkeypatch):
    from llm2llm import eda

    monkeypatch.setenv("LLM2LLM_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(
        UserError, match=r"WordNet 3.0 not found in .*nowhere .*apt-get install wordnet-base wordnet-sense-index"
    ):
        eda.load_wordnet(str(tmp_path / "nowhere"))
    assert not (tmp_path / "models" / "nltk_data" / "corpora" / "wordnet").exists()


def test_baselines_that_need_classification_refuse_other_tasks(tmp_path, data_dir):
    proc = cli_in_process(
        "boost",
        "--profile",
        "tiny",
        "--dataset",
        "gsm8k",
        "--method",
        "eda",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(data_dir),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2
    assert re.search(
        r"^error: loop.method eda is implemented for classification tasks; task 'gsm8k' is numeric", proc.stderr, re.M
    )
    assert not (tmp_path / "runs").exists()
    args = ("boost", "--profile", "tiny", "--dataset", "gsm8k", "--train-balance-labels", "true")
    proc = cli_in_process(
        *args, "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir), cwd=REPO, check=False
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "train.balance_labels balances the training set by label; task 'gsm8k' is numeric" in proc.stderr
    assert not (tmp_path / "runs").exists()
    proc = cli_in_process(
        *args[:5], "--set", "teacher.paraphrase=2", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
        str(data_dir), cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "teacher.paraphrase asks for paraphrases, implemented for classification tasks; task 'gsm8k'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_compare_renders_table_and_plot_from_the_run_dirs_alone(runs, tmp_path):
    out = tmp_path / "cmp"
    printed = cli_in_process("compare", str(runs), "--output", str(out), cwd=REPO).stdout
    table = (out / "compare.md").read_text()
    assert table in printed
    rows = {
        cells[1]: cells
        for cells in (
            [c.strip() for c in line.strip("|").split("|")]
            for line in table.split("## Paired differences")[0].splitlines()  # the main table
            if line.startswith("| snips |")
        )
    }
    assert list(rows) == ["plain", "eda", "auggpt", "one-shot"]  # methods in a fixed order
    plain = [
        metrics(runs / name)["iterations"][0]["test_accuracy"] * 100
        for name in ("snips-tiny-plain", "snips-tiny-plain-seed1")
    ]
    mean = sum(plain) / 2
    std = abs(plain[0] - plain[1]) / 2**0.5
    assert rows["plain"][3] == "0, 1" and rows["plain"][4] == f"{mean:.1f} ± {std:.1f}"
    eda = metrics(runs / "snips-tiny-eda")
    assert rows["eda"][6] == str(eda["iterations"][-1]["train_size"]) and rows["eda"][7] == "0"
    assert rows["auggpt"][7] == str(metrics(runs / "snips-tiny-auggpt")["teacher_tokens"])
    # beside the last iteration: the test accuracy of the iteration selected on validation
    selected = metrics(runs / "snips-tiny-eda")["selected"]
    assert rows["eda"][11] == f"{100 * selected['test_accuracy']:.1f}"
    assert rows["eda"][13] == str(selected["iteration"])
    assert "greedy decoding" in table
    # compare.html: the same table, and a working link to each run's own page
    page = (out / "compare.html").read_text()
    links = re.findall(r'<a href="([^"]+)">', page)
    assert len(links) == len(list(runs.glob("*/metrics.json"))) and all((out / link).exists() for link in links)
    assert "<table>" in page and "selected on validation" in page
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    cli_in_process("compare", str(runs), "--output", str(tmp_path / "again"), cwd=REPO)
    assert (tmp_path / "again" / "compare.png").read_bytes() == png and (
        tmp_path / "again" / "compare.md"
    ).read_text() == table


def test_compare_of_a_folder_without_runs_is_a_one_line_error(tmp_path):
    proc = cli_in_process("compare", str(tmp_path), cwd=REPO, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no metrics.json" in proc.stderr


def test_ablation_augmenting_all_wrong_examples_also_asks_about_synthetic_ones(tmp_path, data_dir, tiny_model):
    boost(
        tmp_path,
        data_dir,
        "llm2llm",
        "--run",
        "all-wrong",
        "--iterations",
        "2",
        "--set",
        "loop.augment_synthetic=true",
    )
    it1 = tmp_path / "runs" / "all-wrong" / "iter_001"
    train = read_jsonl(it1 / "train.jsonl")
    scores = json.loads((it1 / "scores.json").read_text())
    assert len(train) > 14 and scores["seed"]["total"] == len(train)  # the whole training set is scored
    wrong = set(scores["seed"]["wrong_ids"])
    parents = {r["parent_id"] for r in read_jsonl(it1 / "teacher_outputs.jsonl")}
    assert parents == wrong and any(p.startswith("gen0-") for p in parents)
    assert metrics(tmp_path / "runs" / "all-wrong")["variant"] == ["augment synthetic"]  # compare's own cell


def test_compare_gives_an_ablation_its_own_row_and_refuses_runs_it_cannot_tell_apart(runs, tmp_path):
    """The same method and seeds with an ablation switch on (metrics.json `variant`, e.g. continued
    training) is a row of its own; the same seeds with nothing to tell them apart are refused."""
    base = metrics(runs / "snips-tiny-one-shot")
    assert base["variant"] == []
    for name, variant in (("from-base", []), ("continued", ["continued"])):
        (tmp_path / "ab" / name).mkdir(parents=True)
        (tmp_path / "ab" / name / "metrics.json").write_text(json.dumps({**base, "variant": variant}))
    cli_in_process("compare", str(tmp_path / "ab"), "--output", str(tmp_path / "cmp"), cwd=REPO)
    table = (tmp_path / "cmp" / "compare.md").read_text().split("## Paired differences")[0]
    rows = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| snips |")]
    assert rows == ["plain", "one-shot", "one-shot (continued)"]  # plain: their iteration 0
    (tmp_path / "ab" / "continued" / "metrics.json").write_text(json.dumps(base))
    proc = cli_in_process("compare", str(tmp_path / "ab"), cwd=REPO, check=False)
    assert proc.returncode == 2 and "have the same data seed" in proc.stderr and "teacher.per_wrong" in proc.stderr


def test_one_shot_can_match_a_total_teacher_budget(tmp_path, data_dir, tiny_model):
    boost(tmp_path, data_dir, "one-shot", "--run", "total", "--set", "baselines.one_shot_total=17")
    it0 = tmp_path / "runs" / "total" / "iter_000"
    wrong = json.loads((it0 / "scores.json").read_text())["seed"]["wrong_ids"]
    requests = read_jsonl(it0 / "teacher_outputs.jsonl")
    per_parent = sorted((sum(r["parent_id"] == w for r in requests) for w in wrong), reverse=True)
    assert len(requests) == 17 and per_parent[0] - per_parent[-1] <= 1  # spread evenly over the wrong examples


def test_compare_pairs_each_method_with_plain_fine_tuning_and_a_reference_on_the_same_examples(runs, tmp_path):
    out = tmp_path / "paired"
    table = cli_in_process("compare", str(runs), "--output", str(out), "--reference", "auggpt", cwd=REPO).stdout
    section = table.split("## Paired differences on test")[1].split("\n## ")[0]
    rows = {c[1]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in section.splitlines()
                              if line.startswith("| snips |"))}  # fmt: skip
    assert list(rows) == ["plain", "eda", "auggpt", "one-shot"]

    def acc(name, iteration=-1):
        return 100 * metrics(runs / name)["iterations"][iteration]["test_accuracy"]

    eda, auggpt = rows["eda"], rows["auggpt"]
    # against plain fine-tuning: iteration 0 of the same run, on the same examples
    assert float(eda[6]) == pytest.approx(acc("snips-tiny-eda") - acc("snips-tiny-eda", 0), abs=0.051)
    # against the reference: auggpt's run on the same seed
    assert float(eda[10]) == pytest.approx(acc("snips-tiny-eda") - acc("snips-tiny-auggpt"), abs=0.051)
    assert eda[7] == eda[10] and eda[9] in ("0/1", "1/1")  # one seed: the mean is its difference
    assert auggpt[7] == "-" and rows["plain"][3] == "-"  # the reference is not paired with itself
    asked = [
        it["teacher_requests"]
        for it in metrics(runs / "snips-tiny-auggpt")["iterations"]
        if it.get("teacher_requests")
    ]
    tokens = sum(t["completion_tokens"] for t in asked)
    assert auggpt[11] == str(tokens) and eda[11] == "0"
    proc = cli_in_process("compare", str(runs), "--reference", "nope", cwd=REPO, check=False)
    assert proc.returncode == 2 and "--reference nope: no such method among the runs" in proc.stderr


def test_compare_without_plain_runs_makes_plain_fine_tuning_from_the_runs_iteration_0(runs, tmp_path):
    """Methods compared without a plain-method run still get a plain row (the absolute accuracy every
    'vs plain FT' is measured from): iteration 0 of their runs, one per seed, with none of the teacher
    work that iteration 0's generate phase did for the method."""
    names = ("snips-tiny-eda", "snips-tiny-auggpt", "snips-tiny-one-shot")
    paths = [str(runs / n) for n in names]
    table = cli_in_process("compare", *paths, "--reference", "auggpt", "--output", str(tmp_path), cwd=REPO).stdout
    main, paired = table.split("## Paired differences on test")
    rows = {c[1]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in main.splitlines()
                              if line.startswith("| snips |"))}  # fmt: skip
    assert list(rows) == ["plain", "eda", "auggpt", "one-shot"]
    first = {100 * metrics(runs / n)["iterations"][0]["test_accuracy"] for n in names}
    assert len(first) == 1  # one seed: one shared iteration 0
    plain = rows["plain"]
    assert plain[3] == "0" and float(plain[4]) == pytest.approx(first.pop(), abs=0.051)
    assert plain[6] == "14" and plain[7] == "0" and plain[13] == "0"  # seed examples only, no teacher tokens
    assert "snips plain (seed size 14): iteration 0 of the other runs" in main
    listed = [line for line in paired.split("## Runs")[1].splitlines() if "(plain" in line]
    assert len(listed) == 1 and "(plain: iteration 0 of this " in listed[0]  # not mistaken for a plain-method run
    row = next(line for line in paired.splitlines() if line.startswith("| snips | plain |"))
    cells = [x.strip() for x in row.strip("|").split("|")]
    auggpt = 100 * metrics(runs / "snips-tiny-auggpt")["iterations"][-1]["test_accuracy"]
    assert float(cells[7]) == pytest.approx(float(plain[4]) - auggpt, abs=0.051)  # paired with the reference
    assert cells[11] == "0" and cells[13] == "-"  # neither tokens nor kept examples of the method's iteration 0


def test_compare_pools_a_seeds_teacher_draws_and_pairs_their_mean(runs, tmp_path, data_dir, tiny_model):
    """A second AugGPT run of seed 0 that differs only in teacher.sampling.seed is a draw of the same cell:
    the table averages the seed's draws, and EDA's difference against AugGPT is EDA's accuracy minus the
    draws' mean (llm2llm/paired.py resamples the draws as a third level)."""
    boost(tmp_path, data_dir, "auggpt", "--run", "auggpt-draw1", "--set", "teacher.sampling.seed=1")
    draw1 = tmp_path / "runs" / "auggpt-draw1"
    assert metrics(draw1)["teacher_seed"] == 1 and metrics(runs / "snips-tiny-auggpt")["teacher_seed"] == 0
    paths = [str(runs / "snips-tiny-eda"), str(runs / "snips-tiny-auggpt"), str(draw1)]
    table = cli_in_process(
        "compare", *paths, "--reference", "auggpt", "--output", str(tmp_path / "c"), cwd=REPO
    ).stdout
    main, paired = table.split("## Paired differences on test")

    def row(section, method):
        line = next(line for line in section.splitlines() if line.startswith(f"| snips | {method} |"))
        return [x.strip() for x in line.strip("|").split("|")]

    def acc(run):
        return 100 * metrics(run)["iterations"][-1]["test_accuracy"]

    draws = (acc(runs / "snips-tiny-auggpt") + acc(draw1)) / 2
    assert row(main, "auggpt")[3] == "0 × 2 teacher draws" and float(row(main, "auggpt")[4]) == pytest.approx(
        draws, abs=0.051
    )
    eda = row(paired, "eda")
    assert float(eda[7]) == pytest.approx(acc(runs / "snips-tiny-eda") - draws, abs=0.051) and eda[7] == eda[10]
    assert row(paired, "auggpt")[2] == "1 × 2 teacher draws" and "then a seed's teacher draws" in paired
    assert f"{draw1} (auggpt, seed 0, teacher seed 1)" in paired  # the Runs list
    spread = abs(acc(runs / "snips-tiny-auggpt") - acc(draw1))
    assert f"- snips auggpt: the teacher draws of one seed differ by {spread:.1f} test points on average" in paired


def test_per_label_splits_the_paired_difference_by_gold_label(runs):
    """bench/per_label.py: the per-label points add up to the difference of the two runs' accuracies,
    and the bracketed counts are each run's training examples of that label."""
    import subprocess
    import sys

    eda, auggpt = runs / "snips-tiny-eda", runs / "snips-tiny-auggpt"
    out = subprocess.run(
        [sys.executable, "bench/per_label.py", "--runs", str(eda), "--reference", str(auggpt)],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    header, _, row = [line for line in out.splitlines() if line.startswith("|")]
    labels, cells = header.strip("|").split("|")[2:], row.strip("|").split("|")
    accuracy = [metrics(r)["iterations"][-1]["test_accuracy"] for r in (eda, auggpt)]
    assert cells[0].strip() == "0" and float(cells[1]) == pytest.approx(100 * (accuracy[0] - accuracy[1]), abs=0.051)
    parts = [re.match(r"\s*([+-][\d.]+) \((\d+) / (\d+)\)", c).groups() for c in cells[2:]]
    assert sum(float(p[0]) for p in parts) == pytest.approx(float(cells[1]), abs=0.05 * len(parts) + 0.051)
    for run, column in ((eda, 1), (auggpt, 2)):
        train = read_jsonl(run / "iter_001" / "train.jsonl")
        assert [int(p[column]) for p in parts] == [sum(e["label"] == label.strip() for e in train) for label in labels]
