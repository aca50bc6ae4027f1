"""The bad-input corpus: data files, task specs, run configs, model folders and CLI use that are
wrong in one way each. Every case must end in exactly one line on stderr, `error: ...`, that names
the file / field / line and says what to do, a non-zero exit, and an existing run directory left
exactly as it was. The real CLI entry point runs in this process (one import for all cases)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

LABELS = ["account", "billing", "bug"]


def rows(n_per_label: int = 10, prefix: str = "t") -> list[dict]:
    return [
        {"ticket_id": f"{prefix}{i}-{label}", "body": f"ticket number {i} about {label} problems", "queue": label}
        for label in LABELS
        for i in range(n_per_label)
    ]


def write_jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def task(tmp_path):
    """A small user task (spec + JSONL) that works, to be broken one way per case."""
    folder = tmp_path / "task"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train.jsonl", rows())
    write_jsonl(folder / "data" / "test.jsonl", rows(2, "x"))
    spec = {
        "name": "tickets",
        "type": "classification",
        "data": {"folder": "data", "train": "train.jsonl", "test": "test.jsonl"},
        "fields": {"id": "ticket_id", "text": "body", "label": "queue"},
        "labels": LABELS,
    }
    (folder / "tickets.yaml").write_text(yaml.safe_dump(spec))
    return folder


def spec_edit(change):
    def edit(task: Path, _tmp: Path):
        spec = yaml.safe_load((task / "tickets.yaml").read_text())
        change(spec)
        (task / "tickets.yaml").write_text(yaml.safe_dump(spec))

    return edit


def data_file_in_spec(name: str, content: bytes):
    """A data file of another type, named as the spec's train split."""

    def edit(task: Path, tmp: Path):
        (task / "data" / name).write_bytes(content)
        spec_edit(lambda s: s["data"].update(train=name))(task, tmp)

    return edit


def data_edit(name: str, content):
    def edit(task: Path, _tmp: Path):
        path = task / "data" / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return edit


def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


GOOD = {"ticket_id": "g1", "body": "cannot log in to my account", "queue": "account"}


def model_copy(damage):
    """Arguments naming a copy of the tiny model, damaged one way, as the student."""

    def make(tmp: Path, tiny: Path) -> list[str]:
        folder = tmp / "broken-model"
        shutil.copytree(tiny, folder)
        damage(folder)
        return ["--student", str(folder)]

    return make


def truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


def sharded_with_a_missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "metadata": {},
                "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
            }
        )
    )


def with_config(**changes):
    def damage(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


def profile_file(text: str, extra: dict[str, str] | None = None):
    def make(tmp: Path, _tiny: Path) -> list[str]:
        for name, content in (extra or {}).items():
            (tmp / name).write_text(content)
        (tmp / "mine.yaml").write_text(text)
        return ["--profile", str(tmp / "mine.yaml")]

    return make


def deepspeed_file(name: str, text: str):
    """--deepspeed with a DeepSpeed JSON of this text."""

    def make(tmp: Path, _tiny: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["--deepspeed", str(tmp / name)]

    return make


# (case id, change to the task files or None, extra CLI arguments (list or maker), expected message regex)
CASES = [
    # --- data files ---
    (
        "json-malformed",
        data_edit("train.jsonl", lines(GOOD, GOOD | {"ticket_id": "g2"}, '{"ticket_id": "g3", "body": "broken')),
        [],
        r"data/train\.jsonl:3: not valid JSON \(.*\); fix or remove that line",
    ),
    (
        "not-utf8",
        data_edit(
            "train.jsonl", lines(GOOD).encode() + b'{"ticket_id": "g2", "body": "caf\xe9 bill", "queue": "billing"}\n'
        ),
        [],
        r"data/train\.jsonl: not UTF-8 text \(byte \d+\); re-save the file as UTF-8",
    ),
    (
        "json-not-an-object",
        data_edit("train.jsonl", lines(GOOD, '["g2", "an array"]')),
        [],
        r"data/train\.jsonl:2: expected a JSON object per line, got list",
    ),
    (
        "missing-field",
        data_edit("train.jsonl", lines(GOOD, {"ticket_id": "g2", "queue": "bug"})),
        [],
        r"data/train\.jsonl:2: field 'body' is missing or empty",
    ),
    (
        "empty-field",
        data_edit("train.jsonl", lines(GOOD, {"ticket_id": "g2", "body": "   ", "queue": "bug"})),
        [],
        r"data/train\.jsonl:2: field 'body' is missing or empty",
    ),
    (
        "missing-column",
        data_edit("test.jsonl", lines({"ticket_id": "x", "body": "hello"})),
        [],
        r"data/test\.jsonl: no column 'queue' for the task's label \(spec key fields\.label\); the file's columns "
        r"are: body, ticket_id",
    ),
    (
        "empty-split",
        data_edit("test.jsonl", ""),
        [],
        r"data/test\.jsonl: the split is empty; it needs at least one example",
    ),
    ("blank-split", data_edit("test.jsonl", "\n  \n\n"), [], r"data/test\.jsonl: the split is empty"),
    (
        "label-outside-set",
        data_edit("test.jsonl", lines(GOOD | {"queue": "sales"})),
        [],
        r"data/test\.jsonl:1: field 'queue' has label 'sales', which is not one of the task's labels \(account, "
        r"billing, bug\)",
    ),
    (
        "duplicate-id",
        data_edit("train.jsonl", lambda p: write_jsonl(p, rows() + [rows()[4]])),
        [],
        r"data/train\.jsonl:31: duplicate id 't4-account' \(first at line 5\); ids must be unique",
    ),
    (
        "huge-line",
        data_edit("train.jsonl", lines(GOOD, GOOD | {"ticket_id": "g2", "body": "word " * 40_000})),
        [],
        r"data/train\.jsonl:2: field 'body' is 200,000 characters long \(the limit is 100,000\); is the line "
        r"broken\? Trim or split it",
    ),
    (
        "missing-file",
        data_edit("test.jsonl", lambda p: p.unlink()),
        [],
        r"data file .*data/test\.jsonl not found; check --data-dir",
    ),
    (
        "unsupported-type",
        data_file_in_spec("train.txt", b"ticket one\n"),
        [],
        r"data/train\.txt: unsupported file type '\.txt'; use \.jsonl, \.json, \.csv, \.parquet or a saved dataset "
        r"folder",
    ),
    (
        "csv-missing-column",
        data_file_in_spec("train.csv", b"ticket_id,text,queue\r\nt1,hi there,bug\r\n"),
        [],
        r"data/train\.csv: no column 'body' for the task's text \(spec key fields\.text\); the file's columns are: "
        r"queue, text, ticket_id",
    ),
    (
        "csv-not-utf8",
        data_file_in_spec("train.csv", b"ticket_id,body,queue\r\nt1,caf\xe9 bill,billing\r\n"),
        [],
        r"data/train\.csv: not UTF-8 text \(byte \d+\); re-save the file as UTF-8",
    ),
    (
        "parquet-corrupt",
        data_file_in_spec("train.parquet", b"PAR1 not really parquet"),
        [],
        r"cannot read .*data/train\.parquet: ",
    ),
    # --- task specs ---
    (
        "spec-yaml-syntax",
        lambda t, _: (t / "tickets.yaml").write_text("name: tickets\ntype: [classification\n"),
        [],
        r"tickets\.yaml: line \d+ is not valid YAML .*; fix the syntax",
    ),
    ("spec-unknown-key", spec_edit(lambda s: s.update(lables=LABELS)), [], r"tickets\.yaml: unknown key 'lables'"),
    (
        "spec-bad-type",
        spec_edit(lambda s: s.update(type="regression")),
        [],
        r"tickets\.yaml: type: Input should be 'classification', 'numeric', 'multiple_choice' or 'free_text'",
    ),
    (
        "spec-unknown-field",
        spec_edit(lambda s: s["fields"].update(txt="body")),
        [],
        r"tickets\.yaml: fields\.txt is not a field of a classification task \(its fields: id, text, label\)",
    ),
    (
        "spec-unknown-template",
        spec_edit(lambda s: s.update(templates={"studnet": "{text}"})),
        [],
        r"tickets\.yaml: templates\.studnet is not a classification template",
    ),
    (
        "spec-template-placeholder",
        spec_edit(lambda s: s.update(templates={"student": "Route: {ticket}"})),
        [],
        r"tickets\.yaml: templates\.student uses \{ticket\}; its placeholders are \{labels\}, \{text\}",
    ),
    (
        "spec-template-syntax",
        spec_edit(lambda s: s.update(templates={"student": "Route {text"})),
        [],
        r"tickets\.yaml: templates\.student is not a valid format string .*; write literal braces as \{\{ \}\}",
    ),
    (
        "spec-one-label",
        spec_edit(lambda s: s.update(labels=["bug"])),
        [],
        r"tickets\.yaml: labels: List should have at least 2 items",
    ),
    (
        "spec-holdout-without-file",
        spec_edit(lambda s: s["data"].update(holdout={"test_fraction": 0.5})),
        [],
        r"tickets\.yaml: data\.holdout splits one file: give data\.file too",
    ),
    (
        "spec-missing-folder",
        spec_edit(lambda s: s["data"].update(folder="nowhere")),
        [],
        r"data folder .*/nowhere not found for task 'tickets'",
    ),
    (
        "spec-missing",
        None,
        lambda tmp, _: ["--dataset", str(tmp / "nope.yaml")],
        r"task spec .*nope\.yaml does not exist",
    ),
    # --- run configs ---
    (
        "config-unknown-key",
        None,
        ["--set", "train.epoch=3"],
        r"unknown key 'train\.epoch'; see `llm2llm config --explain`",
    ),
    (
        "config-wrong-type",
        None,
        ["--set", "train.epochs=many"],
        r"train\.epochs: Input should be a valid number.*\(got 'many'\)",
    ),
    ("config-impossible-value", None, ["--set", "train.epochs=-1"], r"train\.epochs: Input should be greater than 0"),
    (
        "config-seed-size-not-whole",
        None,
        ["--seed-size", "2.5"],
        r"data\.seed_size 2\.5 is neither a whole count nor a fraction below 1",
    ),
    (
        "config-seed-size-too-big",
        None,
        ["--seed-size", "500"],
        r"asked for 500 examples but the split has only 30; lower data\.seed_size",
    ),
    ("config-profile-unknown-key", None, profile_file("extends: tiny\ntrian: {epochs: 1}\n"), r"unknown key 'trian'"),
    (
        "config-profile-cycle",
        None,
        profile_file("extends: other.yaml\n", {"other.yaml": "extends: mine.yaml\n"}),
        r"other\.yaml: extends 'mine\.yaml', but it is itself extended by 'mine\.yaml'",
    ),
    (
        "config-deepspeed-preset",
        None,
        ["--deepspeed", "zero9"],
        r"train\.deepspeed 'zero9': no .*zero9\.json; use a preset",
    ),
    (
        "config-deepspeed-zero3-without-gather",
        None,
        deepspeed_file("z3.json", '{"zero_optimization": {"stage": 3, "overlap_comm": true}}'),
        r"z3\.json: ZeRO-3 without zero_optimization\.stage3_gather_16bit_weights_on_model_save: true saves only "
        r"ZeRO shards, which evaluation cannot load; add it",
    ),
    (
        "config-deepspeed-not-json",
        None,
        deepspeed_file("ds.json", '{"zero_optimization": {"stage": 2,}}'),
        r"ds\.json:1: train\.deepspeed is not valid JSON \(.*\); fix that line",
    ),
    (
        "config-sleep-without-vllm",
        None,
        ["--set", "teacher.sleep=true", "--set", "teacher.engine=transformers"],
        r"teacher\.sleep keeps a vLLM server asleep between generate phases; teacher\.engine=transformers has none: "
        r"set teacher\.engine=vllm",
    ),
    (
        "plan-sleep-unavailable",
        None,
        ["--set", "teacher.sleep=true", "--set", "teacher.engine=vllm", "--mode", "sequential"],
        r"the GPU plan is impossible: teacher\.sleep: vLLM reports sleep mode unavailable on this machine \(platform "
        r"cpu; it needs CUDA, ROCm or XPU\); set teacher\.sleep=false",
    ),
    (
        "config-openai-without-url",
        None,
        ["--set", "teacher.engine=openai"],
        r"teacher\.engine openai needs teacher\.url",
    ),
    (
        "config-existing-run-differs",
        None,
        ["--rng-seed", "5"],
        r"run .*runs/existing already exists with a different config \(data\.rng_seed: 0 in the run, 5 now\); "
        r"rerun with the same options",
    ),
    # --- model folders ---
    (
        "model-missing-tokenizer",
        None,
        model_copy(lambda f: (f / "tokenizer.json").unlink()),
        r"broken-model has no tokenizer",
    ),
    (
        "model-missing-weights",
        None,
        model_copy(lambda f: (f / "model.safetensors").unlink()),
        r"broken-model has no \*\.safetensors weights",
    ),
    (
        "model-truncated-weights",
        None,
        model_copy(truncate),
        r"broken-model/model\.safetensors is truncated \(\d+ of \d+ bytes\); copy it again",
    ),
    (
        "model-missing-shard",
        None,
        model_copy(sharded_with_a_missing_shard),
        r"is missing weight shards: model-00002-of-00002\.safetensors",
    ),
    (
        "model-missing-config",
        None,
        model_copy(lambda f: (f / "config.json").unlink()),
        r"broken-model has no config\.json",
    ),
    (
        "model-remote-code",
        None,
        model_copy(with_config(auto_map={"AutoModelForCausalLM": "x.Y"})),
        r"needs the Python code in its folder \(auto_map: AutoModelForCausalLM\); read it, then set "
        r"student/teacher.trust_remote_code=true",
    ),
    ("model-not-a-folder", None, ["--teacher", "/no/such/teacher"], r"model folder /no/such/teacher does not exist"),
    # --- what passed before and failed late or silently (issue 28) ---
    (
        "labels-are-numbers",
        lambda task, tmp: (
            data_edit("train.jsonl", lines(*[{**r, "queue": LABELS.index(r["queue"])} for r in rows()]))(task, tmp),
            data_edit("test.jsonl", lines(*[{**r, "queue": LABELS.index(r["queue"])} for r in rows(2, "x")]))(
                task, tmp
            ),
            spec_edit(lambda s: s.update(labels=[0, 1, 2]))(task, tmp),
        ),
        [],
        r"tickets\.yaml: the labels \(0, 1, 2\) are numbers, .* label_names: \{0: <word>, 1: <word>\}",
    ),
    (
        "seed-fewer-than-labels",
        None,
        ["--seed-size", "2"],
        r"data\.seed_size 2 is fewer than the task's 3 labels: .* use at least 3",
    ),
    (
        "seed-beyond-the-smallest-label",
        data_edit("train.jsonl", lines(*[r for r in rows() if r["queue"] != "bug" or r["ticket_id"] < "t2"])),
        ["--seed-size", "12"],
        r"data\.seed_size 12 asks 4 seed examples of label 'bug', which has 2 in the train split; use at most 6, or "
        r"data\.stratified=false",
    ),
    (
        "config-seed-beyond-numpy",
        None,
        ["--set", "train.seed=99999999999"],
        r"train\.seed: Input should be less than 4294967296",
    ),
    (
        "model-index-not-json",
        None,
        model_copy(lambda f: (f / "model.safetensors.index.json").write_text("{not json")),
        r"model\.safetensors\.index\.json is not a valid shard index \(JSONDecodeError",
    ),
    (
        "model-tokenizer-remote-code",
        None,
        model_copy(
            lambda f: (f / "tokenizer_config.json").write_text(
                json.dumps(
                    {
                        **json.loads((f / "tokenizer_config.json").read_text()),
                        "auto_map": {"AutoTokenizer": ["x.T", None]},
                    }
                )
            )
        ),
        r"tokenizer_config\.json needs the Python code in its folder \(auto_map: AutoTokenizer\)",
    ),
    (
        "teacher-chat-without-a-template",
        None,
        lambda tmp, tiny: [
            "--teacher",
            model_copy(lambda f: (f / "chat_template.jinja").unlink())(tmp, tiny)[1],
            "--set",
            "teacher.style=chat",
        ],  # fmt: skip
        r"teacher\.style chat needs a chat template, and the tokenizer in .*broken-model has none",
    ),
    (
        "openai-key-unset",
        None,
        ["--set", "teacher.engine=openai", "--set", "teacher.url=http://127.0.0.1:9/v1"],
        r"teacher\.engine openai sends the API key from \$LLM2LLM_TEACHER_API_KEY, which is not set",
    ),
    (
        "json-byte-order-mark",
        data_edit("train.jsonl", b"\xef\xbb\xbf" + lines(GOOD, GOOD | {"ticket_id": "g2"}).encode()),
        [],
        r"data/train\.jsonl: starts with a UTF-8 byte-order mark, .* re-save it as UTF-8 without one",
    ),
    ("run-name-escapes", None, ["--run", "../escape"], r"run '\.\./escape': a run is one folder in runs_dir"),
    (
        "data-changed-since-the-run-started",
        data_edit("test.jsonl", lines(*rows(2, "x"), {"ticket_id": "new", "body": "a new test row", "queue": "bug"})),
        [],
        r"run .*runs/existing: the test of .*tickets\.yaml changed since the run started \(data\.json\); restore",
    ),
    # --- CLI use ---
    ("cli-unknown-option", None, ["--datset", "snips"], r"No such option '--datset'.*; see `llm2llm boost --help`"),
    ("cli-bad-choice", None, ["--method", "magic"], r"Invalid value for '--method': 'magic' is not one of"),
    ("cli-bad-int", None, ["--iterations", "two"], r"Invalid value for '--iterations': 'two' is not a valid integer"),
    ("cli-missing-value", None, ["--seed"], r"Option '--seed' requires an argument"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(args: list[str], capsys) -> tuple[int, str]:
    from launcher.cli import main

    saved_argv, saved_term = sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv = ["llm2llm", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved_argv
        signal.signal(signal.SIGTERM, saved_term)
    return code, capsys.readouterr().err


def test_the_corpus_is_large_and_its_cases_distinct():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case, change, extra, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, change, extra, message, task, tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.delenv("LLM2LLM_TEACHER_API_KEY", raising=False)
    import re

    runs = tmp_path / "runs"
    base = [
        "boost",
        "--profile",
        "tiny",
        "--dataset",
        str(task / "tickets.yaml"),
        "--seed-size",
        "6",
        "--set",
        "data.test_size=0",
        "--runs-dir",
        str(runs),
        "--run",
        "existing",
    ]
    existing = runs / "existing"
    (existing / "iter_000").mkdir(parents=True)
    from launcher.cli import build_config
    from llm2llm.config import config_to_yaml

    (existing / "config.yaml").write_text(
        config_to_yaml(
            build_config(
                "tiny",
                ("data.test_size=0",),
                data__dataset=str(task / "tickets.yaml"),
                data__seed_size=6.0,
                runs_dir=str(runs),
                run="existing",
            )
        )
    )
    write_jsonl(existing / "iter_000" / "train.jsonl", rows(1))
    (existing / ".lock").touch()  # as a run left it
    from llm2llm.config import DataConfig
    from llm2llm.data import data_fingerprints, load_task_data

    data = load_task_data(DataConfig(dataset=str(task / "tickets.yaml"), seed_size=6))
    (existing / "data.json").write_text(json.dumps(data_fingerprints(data)))  # the data it was started with
    before = snapshot(runs)

    if change:
        change(task, tmp_path)
    args = extra(tmp_path, tiny_model) if callable(extra) else extra
    code, err = run_main([*base, *args], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(runs) == before, "the existing run directory must be left as it was"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("LLM2LLM_LOCK_LEASE_SECONDS", "abc", r"LLM2LLM_LOCK_LEASE_SECONDS='abc': give a number of seconds above 0"),
        ("LLM2LLM_LOCK_LEASE_SECONDS", "0", r"give a number of seconds above 0"),
        ("LLM2LLM_LOCK", "nfs", r"LLM2LLM_LOCK='nfs': use flock or claim"),
        ("LLM2LLM_MODELS", "/no/such/models.yaml", r"LLM2LLM_MODELS=/no/such/models\.yaml: no such file"),
        ("LLM2LLM_DATA_DIR", "/no/such/data", r"LLM2LLM_DATA_DIR=/no/such/data: no such folder"),
        ("LLM2LLM_HOSTNAME", "node a", r"LLM2LLM_HOSTNAME='node a': give a non-empty name without spaces"),
    ],
)
def test_a_bad_environment_variable_is_one_line_before_anything_runs(
    name, value, message, tmp_path, monkeypatch, capsys
):
    import re

    monkeypatch.setenv(name, value)
    code, err = run_main(["boost", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs")], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), err
    assert not (tmp_path / "runs").exists()
