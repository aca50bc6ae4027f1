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


def test_every_config_key_is_a_flag_made_from_the_schema():
    """Each key of the schema (but `profile`, which --profile names) is a flag of every run command, its
    type and choices from the field; a generated flag and its --set spelling build the same config."""
    from launcher.cli import cli
    from launcher.options import RUN_OPTIONS, build_config
    from llm2llm.config import config_keys

    keys = {path for path, _ in config_keys()} - {"profile"}
    for command in ("boost", "config", "doctor", "validate", "plan", "slurm"):
        params = {p.name for p in cli.commands[command].params}
        assert {k.replace(".", "__") for k in keys} <= params, command
    flags = {path: flag for flag, path, _, _ in RUN_OPTIONS}
    assert flags["teacher.per_wrong"] == "--teacher-per-wrong" and flags["data.rng_seed"] == "--rng-seed"
    assert len(set(flags.values())) == len(flags) == len(keys)  # one flag per key, no two alike
    by_flag = build_config(
        "tiny",
        (),
        teacher__per_wrong=7,
        seed_eval__wrong_if="majority",
        train__lora_target_modules=["q_proj"],
        data__validation_size=5,
    )
    by_set = build_config(
        "tiny",
        ("teacher.per_wrong=7", "seed_eval.wrong_if=majority", "train.lora_target_modules=[q_proj]",
         "data.validation_size=5"),
    )  # fmt: skip
    assert by_flag == by_set and by_flag.teacher.per_wrong == 7
    # an sbatch script (llm2llm slurm) rebuilds the options with the same flags, old spellings modernised
    from launcher.slurm import boost_arguments

    args = boost_arguments("tiny", {"teacher__per_wrong": 7, "deprecated_seed": 3, "run": None}, ())
    assert args == ["--profile", "tiny", "--teacher-per-wrong", "7", "--rng-seed", "3"]


def test_generated_flags_parse_and_refuse_as_the_schema_says(tmp_path):
    out = run_cli(
        "config", "--profile", "tiny", "--teacher-per-wrong", "5", "--teacher-contrast", "true",
        "--teacher-style", "chat", "--seed-eval-wrong-if", "majority", "--train-lora-target-modules",
        "[q_proj, v_proj]", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "per_wrong: 5" in out and "contrast: true" in out and "wrong_if: majority" in out
    assert "- q_proj\n  - v_proj" in out
    bad = run_cli("config", "--profile", "tiny", "--seed-eval-wrong-if", "most", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "'most' is not one of 'any', 'majority'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_old_spelling_of_the_rng_seed_still_works_with_a_deprecation_message(tmp_path):
    """--seed and data.seed were the RNG seed beside --seed-size / data.seed_size (the number of seed
    examples): now --rng-seed / data.rng_seed; the old ones are read, each with a one-line message."""
    old = run_cli("config", "--profile", "tiny", "--seed", "4", cwd=tmp_path)
    assert "rng_seed: 4" in old.stdout and "--seed is deprecated" in old.stderr and "--rng-seed" in old.stderr
    new = run_cli("config", "--profile", "tiny", "--rng-seed", "4", cwd=tmp_path)
    assert new.stdout == old.stdout and "deprecated" not in new.stderr
    via_set = run_cli("config", "--profile", "tiny", "--set", "data.seed=4", cwd=tmp_path)
    assert via_set.stdout == old.stdout and "data.seed is deprecated" in via_set.stderr
    # a run folder pinned before the rename (its config.yaml says data.seed) still reads as the same config
    from llm2llm.config import config_from_file

    pinned = tmp_path / "config.yaml"
    pinned.write_text(old.stdout.replace("rng_seed: 4", "seed: 4"))
    assert config_from_file(pinned).data.rng_seed == 4
