"""The teacher options beyond the paper (teacher.contrast, diversity, label_check, coverage, show_seed): a real tiny
boost with all of them on through the CLI, and the parts whose outcome a random-init model cannot
show (a valid wrong answer to contrast with, a teacher that disagrees with a label) on real records."""

import json
import re
from types import SimpleNamespace

import pytest
from conftest import REPO, cli_in_process, read_jsonl, tiny_boost_args

from llm2llm.config import DataConfig
from llm2llm.data import load_task_data
from llm2llm.filtering import filter_examples
from llm2llm.report import diversity
from llm2llm.store import atomic_write_jsonl
from llm2llm.teacher import kept_children, seed_shown, wrong_answers

OPTIONS = ["--set", "teacher.style=chat", "--set", "teacher.contrast=true", "--set", "teacher.diversity=true",
           "--set", "teacher.label_check=true", "--set", "teacher.coverage=1",
           "--set", "teacher.show_seed=3"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("options")
    cli_in_process(*tiny_boost_args(tmp, data_dir, "options", "--iterations", "2", *OPTIONS), cwd=REPO)
    return tmp / "runs" / "options"


def test_coverage_asks_about_every_seed_example_first_and_then_only_the_wrong_ones(run):
    seed = read_jsonl(run / "iter_000" / "train.jsonl")
    for it, per_wrong in ((0, 2), (1, 2)):
        wrong = set(json.loads((run / f"iter_{it:03d}" / "scores.json").read_text())["seed"]["wrong_ids"])
        requests = read_jsonl(run / f"iter_{it:03d}" / "teacher_outputs.jsonl")
        asked = {r["parent_id"]: int(re.search(r"Write (\d+) new", r["prompt"]).group(1)) for r in requests}
        if it == 0:  # every seed example: K for the wrong ones, teacher.coverage for the others
            assert asked == {ex["id"]: per_wrong if ex["id"] in wrong else 1 for ex in seed}
        else:
            assert asked == {i: per_wrong for i in wrong}


def test_every_request_asks_for_variety_and_every_parsed_example_is_label_checked(run):
    for it in (0, 1):
        it_dir = run / f"iter_{it:03d}"
        assert all("Make the new examples differ from each other" in r["prompt"]
                   for r in read_jsonl(it_dir / "teacher_outputs.jsonl"))  # fmt: skip
        candidates = read_jsonl(it_dir / "candidates.jsonl")
        parsed = [c for c in candidates if c["example"] is not None]
        assert parsed and all(set(c["label_check"]) == {"answer", "agrees"} for c in parsed)
        checks = read_jsonl(it_dir / "label_checks.jsonl")
        # one greedy answer per distinct parsed example, asked with the student's prompt
        assert len(checks) == len({c["example"]["text"] for c in parsed})
        assert all("Classify the intent of the user request" in r["prompt"] for r in checks)
        stats = json.loads((it_dir / "teacher_stats.json").read_text())
        assert stats["label_check"]["completion_tokens"] > 0
        assert stats["completion_tokens"] > stats["label_check"]["completion_tokens"]  # counted in the budget
        for c, d in zip(candidates, read_jsonl(it_dir / "filter_decisions.jsonl")):
            if (
                c["example"] is not None
                and not c["label_check"]["agrees"]
                and d["reason"] not in ("truncated", "invalid")
            ):
                assert d["reason"] == "label_mismatch"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["variant"] == ["contrast", "diversity", "show seed 3", "label check", "coverage 1"]
    for page in ("report.md", "report.html"):  # the report names the options that were on
        assert "options: contrast, diversity, show seed 3, label check, coverage 1" in (run / page).read_text()
    assert "label_mismatch" in metrics["iterations"][0]["dropped"]


def test_every_request_starts_with_three_other_seed_examples_and_their_labels(run):
    seed = {ex["id"]: ex for ex in read_jsonl(run / "iter_000" / "train.jsonl")}
    requests = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert requests
    for r in requests:
        listed = re.search(r"each with its correct answer:\n((?:- .+\n){3})\n", r["prompt"])
        assert listed, r["prompt"][:600]
        lines = listed.group(1).splitlines()
        by_line = {f"- {ex['text']} => {ex['label']}": ex for ex in seed.values()}
        shown = [by_line[line] for line in lines if line in by_line]
        assert len(shown) == 3 and r["parent_id"] not in {ex["id"] for ex in shown}
        # the wrong one's own label first (14 seed examples, 7 intents: one other of its label), then two others
        labels = [ex["label"] for ex in shown]
        assert labels[0] == seed[r["parent_id"]]["label"] and len(set(labels)) == 3


def test_the_seed_shown_to_the_teacher_is_own_label_first_then_each_other_label_in_turn():
    seed = [{"id": f"{label}{i}", "label": label} for i in range(3) for label in "ABC"]
    ctx = SimpleNamespace(seed=seed, task=SimpleNamespace(stratum=lambda ex: ex["label"]))
    shown = seed_shown(ctx, {"id": "B1", "label": "B"}, 6)
    assert [ex["id"] for ex in shown] == ["B0", "B2", "A0", "C0", "A1", "C1"]
    assert seed_shown(ctx, seed[0], 0) == []


def test_a_label_the_teacher_copies_from_the_shown_seed_is_not_part_of_the_text(data_dir):
    """The real teacher, shown "text => label" lines, answered "1. Where can I get the video game faith in
    chaos => SearchCreativeWork" (SNIPS seed 0): the label is cut off, not lowercased into the request."""
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    wrong = {"id": "s", "text": "where can i get the video game faith in chaos", "label": "SearchCreativeWork"}
    answer = "1. What is the video game Faith in Chaos? => SearchCreativeWork\n2. Find the album Blue =>\n3. play x"
    assert [ex["text"] for ex in task.parse_teacher(answer, wrong, "chat")] == [
        "what is the video game faith in chaos",
        "find the album blue",
        "play x",
    ]


def test_contrast_and_earlier_examples_reach_the_request(tmp_path, data_dir):
    """wrong_answers reads the seed evaluation's records; the request then names the wrong answer,
    and with diversity lists what was kept for the same seed example before."""
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    seed = [{"id": "s1", "text": "add this song to my road trip list", "label": "AddToPlaylist"},
            {"id": "s2", "text": "will it rain in paris", "label": "GetWeather"}]  # fmt: skip
    (tmp_path / "iter_000").mkdir()
    atomic_write_jsonl(
        tmp_path / "iter_000" / "predictions.jsonl",
        [
            {"key": "seed/s1", "split": "seed", "id": "s1", "output": "PlayMusic"},
            {"key": "seed/s1/1", "split": "seed", "id": "s1", "output": "PlayMusic"},
            {"key": "seed/s1/2", "split": "seed", "id": "s1", "output": "RateBook"},
            {"key": "seed/s1/3", "split": "seed", "id": "s1", "output": "AddToPlaylist"},
            {"key": "seed/s2", "split": "seed", "id": "s2", "output": "not a label"},
            {"key": "test/s1", "split": "test", "id": "s1", "output": "RateBook"},
        ],
    )
    atomic_write_jsonl(
        tmp_path / "iter_000" / "filter_decisions.jsonl",
        [{"kept": True, "example": {"text": "put jazz on my list", "label": "AddToPlaylist", "parent_id": "s1"}},
         {"kept": False, "example": {"text": "dropped one", "label": "AddToPlaylist", "parent_id": "s1"}}],
    )  # fmt: skip
    ctx = SimpleNamespace(task=task, seed=seed, iteration_dir=lambda it: tmp_path / f"iter_{it:03d}")
    answers = wrong_answers(ctx, 0)
    assert answers == {"s1": "PlayMusic"}  # the most frequent valid wrong answer; an invalid one gives none
    earlier = kept_children(ctx, 1)
    assert [ex["text"] for ex in earlier["s1"]] == ["put jazz on my list"]
    notes = task.teacher_notes(seed[0], answers["s1"], earlier["s1"])
    assert 'The student answered "PlayMusic" instead of "AddToPlaylist"' in notes
    assert "do not repeat or imitate these):\n- put jazz on my list" in notes
    assert task.teacher_notes(seed[1], None, None) == ""


def test_a_label_the_teacher_disagrees_with_is_dropped_with_its_own_reason(data_dir):
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    candidates = [
        {"key": "a", "example": {"text": "play some jazz please", "label": "PlayMusic"},
         "label_check": {"answer": "PlayMusic", "agrees": True}},
        {"key": "b", "example": {"text": "is it going to snow tomorrow", "label": "PlayMusic"},
         "label_check": {"answer": "GetWeather", "agrees": False}},
    ]  # fmt: skip
    decisions = filter_examples(candidates, task, [], [], 0.95)
    assert [d["reason"] for d in decisions] == ["kept", "label_mismatch"]
    assert decisions[1]["detail"] == "the teacher answers it with 'GetWeather'"


def test_options_that_add_to_a_chat_request_refuse_continuation_style(tmp_path, data_dir):
    proc = cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, "bad", "--set", "teacher.contrast=true"), cwd=REPO, check=False
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "teacher.contrast adds to the chat request; set teacher.style=chat" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_diversity_figures_tell_copies_from_varied_texts():
    copies = diversity(["add drake to the playlist"] * 3)
    varied = diversity(["add drake to the playlist", "what is the weather in oslo", "book a table for two tonight"])
    assert copies == {"distinct_2": round(4 / 12, 4), "pairwise_rouge_l": 1.0}
    assert varied["distinct_2"] == 1.0 and varied["pairwise_rouge_l"] < 0.3
    assert diversity(["one text only"]) is None


def test_ranking_by_confidence_targets_the_least_sure_seed_examples(tmp_path, data_dir, tiny_model):
    cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, "sure", "--iterations", "1", "--set", "seed_eval.rank_by=confidence",
                         "--set", "seed_eval.weakest=3"),
        cwd=REPO,
    )  # fmt: skip
    it0 = tmp_path / "runs" / "sure" / "iter_000"
    seed = json.loads((it0 / "scores.json").read_text())["seed"]
    confidence = seed["confidence"]
    assert set(confidence) == set(json.loads((tmp_path / "runs" / "sure" / "seed_ids.json").read_text()))
    assert all(v < 0 for v in confidence.values())
    lowest = sorted(confidence, key=lambda i: (confidence[i], i))[:3]
    assert seed["wrong_ids"] == lowest
    assert {r["parent_id"] for r in read_jsonl(it0 / "teacher_outputs.jsonl")} == set(lowest)
    records = [r for r in read_jsonl(it0 / "predictions.jsonl") if r["split"] == "confidence"]
    assert len(records) == 14 and all(r["finish_reason"] == "score" and r["target"] for r in records)
    # compare gives it a cell of its own
    assert json.loads((tmp_path / "runs" / "sure" / "metrics.json").read_text())["variant"] == [
        "weakest 3 by confidence"
    ]


def test_ranking_at_random_targets_a_seeded_draw_whatever_the_student_answered(tmp_path, data_dir, tiny_model):
    """seed_eval.rank_by=random, the control for targeting: `weakest` seed examples drawn blind, the same
    draw on a rerun, a different one for another RNG seed or iteration."""
    from llm2llm.evaluation import drawn

    cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, "blind", "--iterations", "1", "--set", "seed_eval.rank_by=random",
                         "--set", "seed_eval.weakest=3"),
        cwd=REPO,
    )  # fmt: skip
    run = tmp_path / "runs" / "blind"
    seed_ids = json.loads((run / "seed_ids.json").read_text())
    wrong_ids = json.loads((run / "iter_000" / "scores.json").read_text())["seed"]["wrong_ids"]
    assert wrong_ids == drawn(seed_ids, 3, "0/0") and len(set(wrong_ids)) == 3 and set(wrong_ids) <= set(seed_ids)
    assert {r["parent_id"] for r in read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")} == set(wrong_ids)
    assert json.loads((run / "metrics.json").read_text())["variant"] == ["3 at random"]
    ids = [f"s{i:02d}" for i in range(70)]
    assert drawn(ids, 14, "0/0") == drawn(list(reversed(ids)), 14, "0/0")  # the order given does not matter
    assert drawn(ids, 14, "0/0") != drawn(ids, 14, "1/0") != drawn(ids, 14, "1/1")
    assert len(drawn(ids, 0.2, "0/0")) == 14 and len(drawn(ids[:5], 14, "0/0")) == 5


def test_paraphrase_covers_every_seed_example_once_beside_the_targeted_requests(tmp_path, data_dir):
    """teacher.paraphrase: the first teacher phase asks, in one go, for paraphrases of every seed example
    (AugGPT's request) and for K new examples like each wrong one; the next asks about the wrong ones only."""
    args = ["--iterations", "2", "--set", "teacher.style=chat", "--set", "teacher.paraphrase=3"]
    cli_in_process(*tiny_boost_args(tmp_path, data_dir, "para", *args), cwd=REPO)
    run = tmp_path / "runs" / "para"
    seed = read_jsonl(run / "iter_000" / "train.jsonl")
    for it in (0, 1):
        it_dir = run / f"iter_{it:03d}"
        wrong = json.loads((it_dir / "scores.json").read_text())["seed"]["wrong_ids"]
        requests = read_jsonl(it_dir / "teacher_outputs.jsonl")
        paraphrases = [r for r in requests if "Paraphrase this text" in r["prompt"]]
        targeted = [r for r in requests if r not in paraphrases]
        assert sorted(r["parent_id"] for r in targeted) == sorted(wrong)
        assert all("Write 2 new" in r["prompt"] for r in targeted)
        if it == 0:  # every seed example once, asked for 3, whether the student got it right or not
            assert sorted(r["parent_id"] for r in paraphrases) == sorted(ex["id"] for ex in seed)
            assert all(", 3 times, keeping its meaning" in r["prompt"] for r in paraphrases)
        else:
            assert paraphrases == []
        # every candidate carries its source's label, and the kept ones join the next training set
        labels = {ex["id"]: ex["label"] for ex in seed}
        decisions = read_jsonl(it_dir / "filter_decisions.jsonl")
        assert all(d["example"]["label"] == labels[d["example"]["parent_id"]] for d in decisions if d["example"])
        kept = [d["example"]["id"] for d in decisions if d["kept"]]
        following = [ex["id"] for ex in read_jsonl(run / f"iter_{it + 1:03d}" / "train.jsonl")]
        assert following == [ex["id"] for ex in read_jsonl(it_dir / "train.jsonl")] + kept
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["variant"] == ["paraphrase"]
    assert "options: paraphrase" in (run / "report.md").read_text()


def test_spread_adds_up_to_the_budget_in_proportion():
    from llm2llm.methods import spread

    assert spread(12, [1.0, 1.0, 2.0]) == [3, 3, 6]
    assert spread(7, [0.5, 0.25, 0.25, 0.0]) == [3, 2, 2, 0]  # 3.5, 1.75, 1.75: the largest remainders
    assert spread(3, [1.0, 1.0]) == [2, 1]  # a tie goes to the first
    assert sum(spread(84, [0.9, 0.1, 0.33, 0.07, 0.2])) == 84
    assert spread(10, [0.0, 0.0]) == [0, 0] and spread(0, [1.0]) == [0]


@pytest.mark.parametrize("how", ["validation_errors", "seed_errors"])
def test_allocation_spreads_the_papers_budget_by_the_weakness_signal(tmp_path, data_dir, how):
    """teacher.allocate: the iteration's budget (per_wrong x wrong seed examples, as the paper asks) goes
    to the seed examples in proportion to their label's validation error rate, or to their own wrong
    sampled answers; no chat request asks for more than per_wrong."""
    from llm2llm.methods import spread

    args = ["--iterations", "1", "--set", "teacher.style=chat", "--set", f"teacher.allocate={how}",
            "--set", "seed_eval.samples=3", "--set", "seed_eval.temperature=1.0"]  # fmt: skip
    cli_in_process(*tiny_boost_args(tmp_path, data_dir, "alloc", *args), cwd=REPO)
    run = tmp_path / "runs" / "alloc"
    it_dir = run / "iter_000"
    seed = read_jsonl(it_dir / "train.jsonl")
    wrong = json.loads((it_dir / "scores.json").read_text())["seed"]["wrong_ids"]
    task = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    predictions = read_jsonl(it_dir / "predictions.jsonl")
    if how == "validation_errors":
        validation = {
            ex["id"]: ex for ex in load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).validation
        }
        rate = {}
        for label in {ex["label"] for ex in seed}:
            rows = [p for p in predictions if p["split"] == "validation" and validation[p["id"]]["label"] == label]
            rate[label] = sum(not task.score(p["output"], validation[p["id"]]).correct for p in rows) / len(rows)
        per_label = {label: sum(ex["label"] == label for ex in seed) for label in rate}
        weights = [rate[ex["label"]] / per_label[ex["label"]] for ex in seed]
    else:
        weights = [
            sum(
                not task.score(p["output"], ex).correct
                for p in predictions
                if p["split"] == "seed" and p["id"] == ex["id"]
            )
            for ex in seed
        ]
    expected = {ex["id"]: n for ex, n in zip(seed, spread(2 * len(wrong), weights)) if n}
    requests = read_jsonl(it_dir / "teacher_outputs.jsonl")
    asked: dict[str, int] = {}
    for r in requests:
        n = int(re.search(r"Write (\d+) new", r["prompt"]).group(1))
        assert n <= 2  # teacher.per_wrong of the tiny profile
        asked[r["parent_id"]] = asked.get(r["parent_id"], 0) + n
    assert asked == expected and sum(asked.values()) == 2 * len(wrong)
    assert f"allocate {how}" in json.loads((run / "metrics.json").read_text())["variant"]
