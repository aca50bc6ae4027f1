"""The CLI as users type it: help, one-line errors with a non-zero exit, nothing half-written,
every profile, and the README's commands."""

import re
import subprocess

import pytest
from conftest import REPO, cli_in_process, run_cli


def test_boost_help_documents_every_option():
    out = run_cli("boost", "--help", cwd=REPO).stdout
    for option in [
        "--dataset",
        "--data-dir",
        "--seed-size",
        "--iterations",
        "--student",
        "--teacher",
        "--run",
        "--runs-dir",
        "--profile",
        "--set",
        "--engine",
    ]:
        assert re.search(rf"{option}\b.*\S", out), option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "error: unknown dataset 'nope'; known: casehold, gsm8k, snips, sst2, trec"),
        (["--student", "/no/such/model"], "error: model folder /no/such/model does not exist"),
        (["--set", "train.epochs=-1"], "train.epochs: Input should be greater than 0"),
        (["--set", "train.epoch=3"], "unknown key 'train.epoch'"),
        (["--profile", "nope"], "error: unknown profile 'nope'"),
        (["--seed-size", "99999"], "asked for 99999 examples but the split has only 13084"),
        (["--set", "teacher.engine=openai"], "teacher.engine openai needs teacher.url"),
        (
            ["--set", "teacher.engine=llama.cpp"],
            "teacher.engine: Input should be 'transformers', 'vllm', 'vllm-server' or 'openai'",
        ),
        (
            ["--engine", "vllm", "--set", "vllm.tensor_parallel_size=0"],
            "vllm.tensor_parallel_size: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, data_dir, args, message):
    proc = cli_in_process(
        "boost",
        "--profile",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(data_dir),
        *args,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json*"))


def test_incomplete_model_folder(tmp_path, data_dir, tiny_model):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model / "config.json").read_text())
    (broken / "tokenizer.json").write_text((tiny_model / "tokenizer.json").read_text())
    proc = cli_in_process(
        "validate", "--profile", "tiny", "--teacher", str(broken), "--data-dir", str(data_dir), cwd=REPO, check=False
    )
    assert proc.returncode == 2 and f"model folder {broken} has no *.safetensors weights" in proc.stderr


def test_missing_data_dir_says_where_it_looked(tmp_path):
    proc = cli_in_process("validate", "--profile", "tiny", "--data-dir", str(tmp_path), cwd=REPO, check=False)
    assert proc.returncode == 2 and f"data folder {tmp_path}/snips not found" in proc.stderr


@pytest.mark.parametrize("profile", sorted(p.stem for p in (REPO / "configs" / "profiles").glob("*.yaml")))
def test_every_profile_validates(profile, data_dir, tiny_model, smollm2, tmp_path):
    out = cli_in_process(
        "validate", "--profile", profile, "--data-dir", str(data_dir), "--runs-dir", str(tmp_path), cwd=REPO
    ).stdout
    assert out.count("ok ") == 10 and "ok   plan: sequential on 1 node(s)" in out


@pytest.mark.parametrize("dataset", ["snips", "trec", "sst2", "gsm8k", "casehold"])
def test_every_builtin_dataset_validates(dataset, data_dir, smollm2, tmp_path):
    out = cli_in_process(
        "validate", "--dataset", dataset, "--data-dir", str(data_dir), "--runs-dir", str(tmp_path), cwd=REPO
    ).stdout
    assert f"ok   data: {dataset}" in out


def test_engine_option_sets_both_roles_and_keeps_the_api_key_out_of_the_config():
    out = cli_in_process("config", "--profile", "tiny", "--engine", "vllm", cwd=REPO).stdout
    assert "engine: vllm" in out and out.count("engine: vllm") == 2
    out = cli_in_process(
        "config",
        "--profile",
        "tiny",
        "--set",
        "teacher.engine=openai",
        "--set",
        "teacher.url=http://127.0.0.1:9/v1",
        cwd=REPO,
    ).stdout
    assert "api_key_env: LLM2LLM_TEACHER_API_KEY" in out and "url: http://127.0.0.1:9/v1" in out


def test_readme_commands_are_the_make_targets():
    readme = (REPO / "README.md").read_text()
    assert "make install" in readme and "make boost DATASET=snips" in readme
    dry = subprocess.run(
        [
            "make",
            "-n",
            "boost",
            "DATASET=snips",
            "SEED_SIZE=70",
            "TEACHER=tiny-llama",
            "RUN=x",
            "ENGINE=vllm",
            "DEEPSPEED=zero3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dry = " ".join(dry.split())
    assert (
        "llm2llm boost --profile cpu-qwen --dataset snips --run x --seed-size 70 --teacher tiny-llama --engine vllm "
        "--deepspeed zero3"
    ) in dry
    dry = subprocess.run(
        ["make", "-n", "plan", "PROFILE=cpu-zero2"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "llm2llm plan --profile cpu-zero2" in dry
