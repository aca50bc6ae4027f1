"""Loading, validation errors (file, line, field) and seed sampling on real and user files."""

import json
from collections import Counter

import pytest

from llm2llm.config import DataConfig
from llm2llm.data import balance, load_task_data, sample
from llm2llm.errors import UserError


def spec(
    tmp_path, fields="{id: id, text: text, label: label}", data="{train: train.jsonl, test: test.jsonl}", extra=""
):
    path = tmp_path / "task.yaml"
    path.write_text(f"name: mine\ntype: classification\ndata: {data}\nfields: {fields}\n{extra}")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


ROWS = [{"id": f"r{i}", "text": f"text number {i}", "label": "yes" if i % 2 else "no"} for i in range(10)]


def load(dataset, **kw):
    return load_task_data(DataConfig(dataset=dataset, **kw))


def test_seed_is_reproducible_and_stratified(data_dir):
    data = load("snips", data_dir=str(data_dir))
    a = sample(data.train, 35, 0, data.task, stratified=True)
    b = sample(data.train, 35, 0, data.task, stratified=True)
    assert [x["id"] for x in a] == [x["id"] for x in b]
    assert set(Counter(x["label"] for x in a).values()) == {5}
    assert [x["id"] for x in sample(data.train, 35, 1, data.task, True)] != [x["id"] for x in a]
    assert len(sample(data.train, 0.01, 0)) == round(len(data.train) * 0.01)


def test_casehold_is_split_deterministically_and_disjointly(data_dir):
    a, b = load("casehold", data_dir=str(data_dir)), load("casehold", data_dir=str(data_dir))
    assert [x["id"] for x in a.train] == [x["id"] for x in b.train]
    assert not {x["id"] for x in a.train} & {x["id"] for x in a.test}
    assert not {x["id"] for x in a.validation} & {x["id"] for x in a.train + a.test}
    assert len(a.train) + len(a.validation) + len(a.test) == 1000 and len(a.validation) == 100
    assert "no train split" in a.notes[0]


def test_user_csv_with_own_columns_quotes_and_crlf(tmp_path):
    (tmp_path / "train.csv").write_bytes(
        b'utterance,intent\r\n"hello, world",greet\r\n"a ""quoted""\r\nmultiline one",other\r\n  spaced  ,greet\r\n'
    )
    (tmp_path / "test.csv").write_bytes(b"utterance,intent\r\nhi there,greet\r\n")
    data = load(spec(tmp_path, fields="{text: utterance, label: intent}", data="{train: train.csv, test: test.csv}"))
    assert data.task.labels == ["greet", "other"]
    assert data.train[0]["text"] == "hello, world"
    assert (
        data.train[1]["text"] == 'a "quoted"\r\nmultiline one' or data.train[1]["text"] == 'a "quoted"\nmultiline one'
    )
    assert data.train[0]["id"] == "train-000000"  # positional ids when the data has none


def test_parquet_and_saved_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(ROWS[:3]).save_to_disk(str(tmp_path / "test_saved"))
    data = load(spec(tmp_path, data="{train: train.parquet, test: test_saved}"))
    assert len(data.train) == 10 and len(data.test) == 3


@pytest.mark.parametrize(
    "case, content, message",
    [
        (
            "malformed_json",
            '{"id": "a", "text": "x", "label": "no"}\n{"id": "b", "text": \n',
            r"train.jsonl:2: not valid JSON",
        ),
        (
            "missing_field",
            '{"id": "a", "text": "x", "label": "no"}\n{"id": "b", "label": "no"}\n',
            r"train.jsonl:2: field 'text' is missing",
        ),
        (
            "duplicate_id",
            '{"id": "a", "text": "x", "label": "no"}\n{"id": "a", "text": "y", "label": "no"}\n',
            r"train.jsonl:2: duplicate id 'a'",
        ),
        ("empty", "", r"train.jsonl: the split is empty"),
        ("not_object", '["a", "b"]\n', r"train.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_train_file_names_file_line_and_field(tmp_path, case, content, message):
    (tmp_path / "train.jsonl").write_text(content)
    write_jsonl(tmp_path / "test.jsonl", ROWS[:2])
    with pytest.raises(UserError, match=message):
        load(spec(tmp_path))


def test_label_outside_the_set_names_line_and_labels(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "test.jsonl", [ROWS[0], {"id": "t", "text": "x", "label": "maybe"}])
    with pytest.raises(
        UserError,
        match=r"test.jsonl:2: field 'label' has label 'maybe', which is not one of the task's labels \(no, yes\)",
    ):
        load(spec(tmp_path))


def test_not_utf8(tmp_path):
    (tmp_path / "train.jsonl").write_bytes('{"id": "a", "text": "caf\xe9", "label": "no"}\n'.encode("latin-1"))
    write_jsonl(tmp_path / "test.jsonl", ROWS[:2])
    with pytest.raises(UserError, match=r"train.jsonl: not UTF-8 text"):
        load(spec(tmp_path))


def test_missing_files_and_unknown_dataset(tmp_path, data_dir):
    with pytest.raises(UserError, match=r"unknown dataset 'nope'; known: casehold, gsm8k, snips, sst2, trec"):
        load("nope")
    with pytest.raises(UserError, match=r"data folder .*/snips not found .*--data-dir"):
        load("snips", data_dir=str(tmp_path))
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(UserError, match=r"data file .*test.jsonl not found"):
        load(spec(tmp_path))


def test_labels_stored_as_codes_are_named_by_the_spec(tmp_path):
    """An int64 parquet column (and a padded or float label) with the spec's label_names: the models see words."""
    import datasets

    coded = [{"id": f"r{i}", "text": f"text number {i}", "label": i % 2} for i in range(10)]
    datasets.Dataset.from_list(coded).to_parquet(str(tmp_path / "train.parquet"))
    test = [{"id": "t0", "text": "a", "label": " 1 "}, {"id": "t1", "text": "b", "label": 0.0}]
    write_jsonl(tmp_path / "test.jsonl", test)
    files = "{train: train.parquet, test: test.jsonl}"
    with pytest.raises(UserError, match=r"label_names\.0: YAML read a label as the boolean False .* in quotes"):
        load(spec(tmp_path, data=files, extra="label_names: {0: no, 1: yes}\n"))
    data = load(spec(tmp_path, data=files, extra="label_names: {0: 'no', 1: 'yes'}\n"))
    assert data.task.labels == ["no", "yes"]
    assert Counter(ex["label"] for ex in data.train) == {"no": 5, "yes": 5}
    assert [ex["label"] for ex in data.test] == ["yes", "no"]
    with pytest.raises(UserError, match=r"the labels \(0, 1\) are numbers, .* label_names"):
        load(spec(tmp_path, data=files))


def test_balance_repeats_each_label_up_to_the_most_common_one_and_leaves_a_balanced_set_alone(data_dir):
    data = load_task_data(DataConfig(dataset="trec", data_dir=str(data_dir)))
    seed = sample(data.train, 14, 0, data.task, stratified=True)  # 6 labels: two of 3, four of 2
    skewed = seed + [e for e in data.train if e["label"] == "NUM"][:5]  # NUM: 7
    out = balance(skewed, data.task, 0)
    counts = Counter(e["label"] for e in out)
    assert set(counts.values()) == {7} and set(counts) == set(Counter(e["label"] for e in skewed))
    assert out[: len(skewed)] == skewed  # the set itself first, unchanged; then repeats of its own examples
    assert all(e in skewed for e in out)
    for label in ("ENTY", "ABBR"):  # 2 -> 3 whole copies + 1 drawn; 3 -> 2 copies + 1 drawn
        group = [e for e in skewed if e["label"] == label]
        per = Counter(e["id"] for e in out if e["label"] == label)
        assert sorted(per.values()) == sorted([7 // len(group)] * len(group))[:-1] + [7 // len(group) + 1]
    assert balance(skewed, data.task, 0) == out and balance(skewed, data.task, 1) != out  # seeded draw
    assert balance(out, data.task, 0) == out and balance([], data.task, 0) == []
