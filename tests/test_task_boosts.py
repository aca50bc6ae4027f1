"""Every built-in task type boosts end to end (real tiny models through the CLI): the numeric task
(GSM8K, the official code's only task) and the multiple-choice one (CaseHOLD) beside the
classification tasks the other suites boost, each run checked for what it wrote."""

import json

import pytest
from conftest import REPO, cli_in_process, read_jsonl, tiny_boost_args


@pytest.mark.parametrize("dataset", ["gsm8k", "casehold"])
def test_a_task_type_boosts_and_hands_over_the_iteration_chosen_on_validation(tmp_path, data_dir, tiny_model, dataset):
    cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, dataset, "--dataset", dataset, "--seed-size", "6", "--iterations", "1",
                         "--set", "data.test_size=8", "--set", "teacher.sampling.max_new_tokens=24"),
        cwd=REPO,
    )  # fmt: skip
    run = tmp_path / "runs" / dataset
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["task"] == dataset and len(metrics["iterations"]) == 2
    scores = json.loads((run / "iter_000" / "scores.json").read_text())
    assert set(scores) == {"test", "validation", "seed"} and scores["test"]["total"] == 8
    assert scores["validation"]["total"] == 8  # held out of train, as many as test
    assert metrics["selected"]["rule"] == "the best validation accuracy"
    # the teacher was asked about exactly the wrong seed examples, and every answer has a decision
    wrong = set(scores["seed"]["wrong_ids"])
    requests = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert wrong and {r["parent_id"] for r in requests} == wrong
    decisions = read_jsonl(run / "iter_000" / "filter_decisions.jsonl")
    assert len(decisions) >= len(requests) and all(d["reason"] for d in decisions)
    kept = [d["example"] for d in decisions if d["kept"]]
    assert len(read_jsonl(run / "iter_001" / "train.jsonl")) == 6 + len(kept)
    validation_ids = set(json.loads((run / "validation_ids.json").read_text()))
    seed_ids = set(json.loads((run / "seed_ids.json").read_text()))
    assert not validation_ids & seed_ids  # the validation examples are never seed examples
    assert (run / "report.html").exists()


def test_the_default_profile_path_boosts_through_vllm(tmp_path, data_dir, tiny_model):
    """What `make boost` runs, with tiny models in place of SmolLM2 and Qwen: the default profile's chat
    teacher asked for paraphrases of every seed example and for K examples per wrong one after the other seed
    examples and their labels, the seed examples answered several times by sampling, and both models on the
    offline vLLM engine."""
    from llm2llm.config import resolve_config

    profile = resolve_config()  # the default profile, as `make boost` resolves it
    cli_in_process(
        "boost", "--runs-dir", str(tmp_path / "runs"), "--run", "default", "--data-dir", str(data_dir),
        "--student", "tiny-llama", "--teacher", "tiny-llama", "--seed-size", "7", "--set", "data.test_size=8",
        "--set", "train.epochs=1", "--set", "seed_eval.samples=2", "--set", "vllm.max_model_len=512",
        "--set", "vllm.cpu_kv_cache_gib=1", cwd=REPO,
    )  # fmt: skip
    run = tmp_path / "runs" / "default"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["engines"] == {"student": "vllm", "teacher": "vllm"}
    assert metrics["teacher_style"] == "chat"
    seed = json.loads((run / "seed_ids.json").read_text())
    sampled = [r for r in read_jsonl(run / "iter_000" / "predictions.jsonl") if r["split"] == "seed"]
    assert sorted((r["id"], r["sample"]) for r in sampled) == sorted((i, s) for i in seed for s in (0, 1))
    wrong = json.loads((run / "iter_000" / "scores.json").read_text())["seed"]["wrong_ids"]
    requests = read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")
    assert all("<|im_start|>user" in r["prompt"] for r in requests)
    paraphrases = [r for r in requests if r["prompt"].count("Paraphrase this text") == 1]
    assert sorted(r["parent_id"] for r in paraphrases) == sorted(seed)  # every seed example, once
    assert all(f"{profile.teacher.paraphrase} times" in r["prompt"] for r in paraphrases)
    similar = [r for r in requests if r not in paraphrases]
    assert sorted(r["parent_id"] for r in similar) == sorted(wrong) and wrong  # one per wrong one, K at once
    assert all(f"Write {profile.teacher.per_wrong} new" in r["prompt"] for r in similar)
    # the other 6 seed examples (of 7; show_seed asks for up to 13) with their labels before the request
    examples = read_jsonl(run / "iter_000" / "train.jsonl")  # iteration 0 trains on the seed examples
    for r in similar:
        shown = [ex for ex in examples if f"- {ex['text']} => {ex['label']}\n" in r["prompt"]]
        assert len(shown) == 6 and r["parent_id"] not in {ex["id"] for ex in shown}
    assert "paraphrase" in metrics["variant"] and f"show seed {profile.teacher.show_seed}" in metrics["variant"]
    teacher = profile.teacher  # the report names the options on, with their counts
    assert (
        f"- method: **llm2llm** (K = {teacher.per_wrong} per wrong seed example); options: show seed "
        f"{teacher.show_seed}, paraphrase {teacher.paraphrase}\n"
    ) in (run / "report.md").read_text()
    assert (
        f"options: show seed {teacher.show_seed}, paraphrase {teacher.paraphrase}</li>"
        in (run / "report.html").read_text()
    )
    assert metrics["seed_evaluation"].startswith(f"sampled at T={profile.seed_eval.temperature:g}")


def test_a_task_spec_sets_its_own_seed_evaluation_under_the_command_line():
    """GSM8K's solutions need the official code's T 0.7 where SNIPS's labels get the profile's T 1.3, 8 samples."""
    from llm2llm.config import resolve_config

    snips, gsm8k = (
        resolve_config(overrides={"data": {"dataset": "snips"}}),
        resolve_config(overrides={"data": {"dataset": "gsm8k"}}),
    )
    assert (snips.seed_eval.temperature, snips.seed_eval.samples) == (1.3, 8)
    assert (gsm8k.seed_eval.temperature, gsm8k.seed_eval.top_p, gsm8k.seed_eval.samples) == (0.7, 0.9, 1)
    mine = resolve_config(overrides={"data": {"dataset": "gsm8k"}, "seed_eval": {"temperature": 0.5}})
    assert (mine.seed_eval.temperature, mine.seed_eval.top_p) == (0.5, 0.9)


def test_a_task_spec_turns_off_the_request_options_chosen_on_classification():
    """The profile's paraphrases and shown seed examples were chosen on SNIPS and TREC: GSM8K's and CaseHOLD's
    specs turn them off (paraphrases are a classification request), and --set still turns them back on."""
    from llm2llm.config import resolve_config

    for dataset, on in (("snips", True), ("trec", True), ("sst2", True), ("gsm8k", False), ("casehold", False)):
        teacher = resolve_config(overrides={"data": {"dataset": dataset}}).teacher
        assert (teacher.paraphrase > 0, teacher.show_seed > 0) == (on, on), dataset
    mine = resolve_config(overrides={"data": {"dataset": "gsm8k"}, "teacher": {"show_seed": 3}})
    assert (mine.teacher.show_seed, mine.teacher.paraphrase) == (3, 0)
