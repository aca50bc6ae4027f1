"""The filters: ROUGE-L identical to rouge_score's, and each drop reason on real SNIPS rows."""

import random

from rouge_score import rouge_scorer

from llm2llm.config import DataConfig
from llm2llm.data import load_task_data
from llm2llm.filtering import RougeIndex, filter_examples


def test_rouge_l_matches_rouge_score_on_real_rows(data_dir):
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    rng = random.Random(0)
    texts = [ex["text"] for ex in rng.sample(data.train, 60)]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for query in texts[:20]:
        pool = texts[20:] + [query.replace(" the ", " a ", 1)]
        expected = max(scorer.score(p, query)["rougeL"].fmeasure for p in pool)
        assert RougeIndex(pool).max_f1(query) == expected  # the same float: ties fall on the same side


def test_decisions_equal_the_official_rouge_score_filter(data_dir):
    """bench/dedup.py at a small size: filter_examples keeps exactly what rouge_score + a growing pool keeps,
    on real SNIPS rows, including scores that land exactly on the threshold."""
    from bench.dedup import run

    result = run(n_candidates=250, n_pool=250, repeats=1, baseline_repeats=1, data_dir=data_dir)
    assert result["identical_decisions"], result["differing_ids"]
    assert 0 < result["kept"] < 250  # both outcomes occur
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    a, b = "one two three four five six seven eight nine ten", "one two three four five six seven x y z"
    assert RougeIndex([a]).max_f1(b) == scorer.score(a, b)["rougeL"].fmeasure  # LCS 7 of 10 and 10: F1 at 0.7


def test_each_filter_reason(data_dir):
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    task = data.task
    train_text = data.train[0]["text"]
    test_text = data.test[0]["text"]
    fresh = "play the newest song by an artist nobody has heard of yet on my kitchen speaker"
    candidates = [
        {"key": "1", "example": None},
        {"key": "2", "example": {"id": "g2", "text": "book a table", "label": "NotAnIntent"}},
        {"key": "2b", "example": {"id": "g2b", "text": "d", "label": "PlayMusic"}},
        {"key": "2c", "example": {"id": "g2c", "text": "\x00}{ ####\ufffd ][ -- !!", "label": "PlayMusic"}},  # garbage
        {"key": "3", "example": {"id": "g3", "text": train_text.upper(), "label": "PlayMusic"}},
        {"key": "4", "example": {"id": "g4", "text": test_text, "label": "PlayMusic"}},
        {"key": "5", "example": {"id": "g5", "text": fresh, "label": "PlayMusic"}},
        {"key": "6", "example": {"id": "g6", "text": fresh + " now", "label": "PlayMusic"}},  # near-dup of a kept one
        # the last item of an answer cut by the token limit: dropped even though it reads like a request
        {
            "key": "7",
            "example": {
                "id": "g7",
                "text": "can you provide details about any screening events that take place at",
                "label": "SearchScreeningEvent",
            },
            "truncated": True,
        },
    ]
    decisions = filter_examples(candidates, task, [ex["text"] for ex in data.train[:50]], [test_text], 0.95)
    assert [d["reason"] for d in decisions] == [
        "unparsable",
        "invalid",
        "invalid",
        "invalid",
        "duplicate",
        "test_overlap",
        "kept",
        "near_duplicate",
        "truncated",
    ]
    assert "finish reason length" in decisions[8]["detail"]
    assert "not one of the task's labels" in decisions[1]["detail"]
    assert "fewer than 2 words" in decisions[2]["detail"]
    assert decisions[3]["detail"] == "the text has no letters or digits"
    # how close a near-duplicate or test overlap was (ROUGE-L F1); nothing for a kept example
    assert decisions[5]["detail"] == "ROUGE-L 1.00 against the test and validation splits"
    near = sum(a == b for a, b in zip(fresh.split(), (fresh + " now").split()))  # the LCS: every word of fresh
    f1 = 2 * near / (len(fresh.split()) + len(fresh.split()) + 1)
    assert decisions[7]["detail"] == f"ROUGE-L {f1:.2f} against the training set and the examples kept before it"
    assert decisions[6]["detail"] is None
