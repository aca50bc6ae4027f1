"""A task defined only by a spec YAML over the user's own CSV (own column names, quoted fields,
CRLF, a field spanning lines, stray whitespace), run end to end with the README's make command."""

import json
import subprocess

import pytest
from conftest import REPO, cli_in_process, read_jsonl

QUEUES = {
    "billing": "I was charged twice for my {} subscription",
    "bug": "The {} page crashes when I click save",
    "account": "Please reset the password of my {} login",
}
PRODUCTS = ["pro", "team", "family", "student", "basic", "annual", "monthly", "trial", "legacy", "mobile", "desktop"]

SPEC = """\
name: tickets
type: classification
data: {folder: data, train: train.csv, test: test.csv}
fields: {id: ticket_id, text: body, label: queue}
templates:
  student: "Route the support ticket. Answer with exactly one of: {labels}.\\nTicket: {text}"
  teacher_continuation: "Support tickets for the {label} queue:\\n{examples}-"
"""


def write_csv(path, rows):
    lines = ["ticket_id , body ,queue"]  # stray spaces around header names too
    for i, (text, queue) in enumerate(rows):
        body = '"' + text.replace('"', '""') + '"'
        lines.append(f"{path.stem}-{i}, {body} ,  {queue} ")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


@pytest.fixture
def user_task(tmp_path):
    (tmp_path / "data").mkdir()
    train = [(template.format(product), queue) for queue, template in QUEUES.items() for product in PRODUCTS[:8]]
    train[0] = (
        'Charged twice, "again"!\nSecond line of the same ticket',
        "billing",
    )  # quotes + a line break inside a field
    test = [
        (template.format(product) + " today", queue)
        for queue, template in QUEUES.items()
        for product in PRODUCTS[4:11]
    ]
    write_csv(tmp_path / "data" / "train.csv", train)
    write_csv(tmp_path / "data" / "test.csv", test)
    (tmp_path / "tickets.yaml").write_text(SPEC)
    return tmp_path


def test_make_boost_runs_a_task_defined_only_by_a_spec_over_a_user_csv(user_task, tiny_model):
    runs = user_task / "runs"
    proc = subprocess.run(
        [
            "make",
            "-s",
            "boost",
            f"DATASET={user_task / 'tickets.yaml'}",
            "PROFILE=tiny",
            "SEED_SIZE=6",
            "ITERATIONS=1",
            f"RUNS_DIR={runs}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / "tickets-tiny"
    seed = read_jsonl(run / "iter_000" / "train.jsonl")
    assert len(seed) == 6 and sorted({ex["label"] for ex in seed}) == [
        "account",
        "billing",
        "bug",
    ]  # stratified, stripped
    assert all(ex["id"].startswith("train-") and not ex["text"].startswith(" ") for ex in seed)
    predictions = read_jsonl(run / "iter_000" / "predictions.jsonl")
    assert any(
        "Route the support ticket. Answer with exactly one of: account, billing, bug." in p["prompt"]
        for p in predictions
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "tickets" and metrics["complete"] and len(metrics["iterations"]) == 2
    assert metrics["iterations"][0]["test_total"] == 20


def test_the_multiline_quoted_field_survives(user_task):
    from llm2llm.config import DataConfig
    from llm2llm.data import load_task_data

    data = load_task_data(DataConfig(dataset=str(user_task / "tickets.yaml")))
    assert data.train[0]["text"].replace("\r\n", "\n") == 'Charged twice, "again"!\nSecond line of the same ticket'
    assert data.train[0]["id"] == "train-0" and data.task.labels == ["account", "billing", "bug"]
    assert len(data.test) == 21


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.joinpath("train.csv").write_text("ticket_id,body,team\r\na,b,c\r\n"),
            r"train.csv: no column 'queue' for the task's label \(spec key fields.label\); the file's columns are: "
            r"body, team, ticket_id",
        ),
        (
            lambda d: d.joinpath("test.csv").write_text("ticket_id,body,queue\r\nt1,hello there,sales\r\n"),
            r"test.csv:row 1: field 'queue' has label 'sales', which is not one of the task's labels \(account, "
            r"billing, bug\)",
        ),
        (lambda d: d.joinpath("test.csv").write_text("ticket_id,body,queue\r\n"), r"test.csv: the split is empty"),
        (
            lambda d: d.joinpath("train.csv").write_text("ticket_id,body,queue\r\nt1,,bug\r\n"),
            r"train.csv:row 1: field 'body' is missing or empty",
        ),
        (
            lambda d: d.joinpath("train.csv").write_bytes(b"ticket_id,body,queue\r\nt1,caf\xe9,bug\r\n"),
            r"train.csv: not UTF-8 text \(byte \d+\); re-save the file as UTF-8",
        ),
    ],
)
def test_bad_user_csv_is_one_line_naming_file_and_field(user_task, change, message):
    import re

    change(user_task / "data")
    proc = cli_in_process(
        "validate", "--dataset", str(user_task / "tickets.yaml"), "--profile", "tiny", cwd=REPO, check=False
    )
    assert proc.returncode != 0
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and re.search(message, error[0]), proc.stderr


COUNTRIES = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Egypt": "Cairo",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Norway": "Oslo",
    "Ghana": "Accra",
    "Cuba": "Havana",
    "Iran": "Tehran",
    "Nepal": "Kathmandu",
    "Fiji": "Suva",
    "Mali": "Bamako",
    "Oman": "Muscat",
    "Laos": "Vientiane",
    "Chad": "N'Djamena",
}


def test_free_text_scores_by_normalised_exact_match_and_parses_teacher_blocks():
    from llm2llm.tasks import FreeTextTask

    task = FreeTextTask(name="capitals", spec={})
    gold = {"id": "1", "input": "the capital of the USA", "output": "Washington, D.C."}
    assert task.score("washington dc\nmore text", gold).correct
    assert task.score("The Washington DC", gold).correct  # articles and punctuation do not count
    assert not task.score("Washington state", gold).correct
    assert not task.score("   ", gold).valid
    assert not FreeTextTask(name="c", spec={"match": "exact"}).score("washington dc", gold).correct
    prompt = task.teacher_continuation(gold, [{"id": "2", "input": "the capital of Peru", "output": "Lima"}])
    assert prompt.endswith("Input: the capital of the USA\nOutput: Washington, D.C.\n\nInput:")
    parsed = task.parse_teacher(" the capital of Chile\nOutput: Santiago\n", gold, "continuation")
    assert parsed == [{"input": "the capital of Chile", "output": "Santiago"}]
    chat = "1. Input: capital of Oman\nOutput: Muscat\n2. Input: capital of Fiji\nOutput: Suva"
    assert [p["output"] for p in task.parse_teacher(chat, gold, "chat")] == ["Muscat", "Suva"]
    assert task.parse_teacher("Input: no output here", gold, "continuation") == []


def test_a_free_text_task_runs_end_to_end(tmp_path, data_dir, tiny_model):
    rows = [{"country": c, "capital": k} for c, k in COUNTRIES.items()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[12:]))
    (tmp_path / "capitals.yaml").write_text(
        "name: capitals\ntype: free_text\ndata: {train: train.jsonl, test: test.jsonl}\n"
        'fields: {input: country, output: capital}\ntemplates:\n  student: "The capital of {input} is"\n'
    )
    cli_in_process(
        "boost",
        "--profile",
        "tiny",
        "--dataset",
        str(tmp_path / "capitals.yaml"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seed-size",
        "8",
        "--iterations",
        "1",
        "--set",
        "data.test_size=0",
        cwd=REPO,
    )
    run = tmp_path / "runs" / "capitals-tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task_type"] == "free_text" and metrics["complete"] and metrics["iterations"][0]["test_total"] == 6
    prompts = [r["prompt"] for r in read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")]
    assert prompts and all(
        p.startswith("Inputs with their expected outputs:") and p.endswith("Input:") for p in prompts
    )
