"""Crash-safe storage and config validation."""

import json
import logging
import os
import time
from pathlib import Path

import pytest
from conftest import REPO

from llm2llm.config import explain, parse_set_option, resolve_config
from llm2llm.errors import UserError
from llm2llm.store import RecordLog, atomic_dir, atomic_write_json


def test_record_log_drops_a_torn_line_and_never_duplicates(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RecordLog(path)
    log.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    with open(path, "a") as f:
        f.write('{"key": "c", "v"')  # what kill -9 in the middle of a write leaves
    reopened = RecordLog(path)
    assert sorted(reopened.records) == ["a", "b"]
    reopened.append([{"key": "b", "v": 99}, {"key": "c", "v": 3}])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in lines] == ["a", "b", "c"] and lines[1]["v"] == 2


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "student"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("whole")
    assert (target / "weights").read_text() == "whole"
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_profiles_resolve_and_overrides_apply():
    config = resolve_config("cpu-smollm2", parse_set_option("train.epochs=3"))
    assert config.train.epochs == 3 and config.run == "snips-cpu-smollm2"
    assert resolve_config("tiny").student.model == "tiny-llama"


def test_a_run_reached_by_another_spelling_of_its_folder_resumes(tmp_path, monkeypatch):
    import llm2llm.rundir as rundir

    (tmp_path / "runs").mkdir()
    with rundir.RunDir(resolve_config("tiny", {"runs_dir": str(tmp_path / "runs"), "run": "r"})):
        pass
    monkeypatch.chdir(tmp_path)
    with rundir.RunDir(resolve_config("tiny", {"runs_dir": "runs", "run": "r"})) as again:  # relative, same folder
        assert again.path.resolve() == (tmp_path / "runs" / "r")
    with pytest.raises(UserError, match=r"different config \(data\.rng_seed: 0 in the run, 5 now\)"):
        rundir.RunDir(resolve_config("tiny", {"runs_dir": "runs", "run": "r", "data": {"rng_seed": 5}}))


@pytest.mark.parametrize(
    "profile", sorted(p.stem for p in (Path(__file__).parent.parent / "configs" / "profiles").glob("*.yaml"))
)
def test_every_profile_resolves_and_names_registry_models(profile):
    from llm2llm.models import registry

    config = resolve_config(profile)
    assert config.student.model in registry() and config.teacher.model in registry()


def test_teacher_profile_samples_the_seed_and_asks_in_chat_style():
    config = resolve_config("cpu-qwen")
    assert config.teacher.model == "qwen2.5-coder-1.5b-instruct" and config.teacher.style == "chat"
    assert config.seed_eval.temperature > 0 and config.seed_eval.samples > 1
    with pytest.raises(UserError, match=r"seed_eval.samples > 1 draws the same greedy answer each time"):
        resolve_config("cpu-smollm2", {"seed_eval": {"samples": 3}})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train": {"epochs": -1}}, r"train.epochs: Input should be greater than 0"),
        ({"train": {"learning_rat": 1}}, r"unknown key 'train.learning_rat'"),
        ({"teacher": {"style": "poem"}}, r"teacher.style: Input should be 'continuation' or 'chat'"),
        ({"data": {"seed_size": 2.5}}, r"seed_size 2.5 is neither a whole count nor a fraction"),
        ({"loop": {"iterations": "many"}}, r"loop.iterations: Input should be a valid integer"),
    ],
)
def test_bad_config_values_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        resolve_config("cpu-smollm2", overrides)
    assert "\n" not in str(info.value)


def test_unknown_profile_and_bad_set():
    with pytest.raises(UserError, match=r"unknown profile 'nope'.*known profiles: cpu-compare, cpu-qwen, cpu-smollm2"):
        resolve_config("nope")
    with pytest.raises(UserError, match=r"expected KEY=VALUE"):
        parse_set_option("train.epochs")


def test_explain_documents_every_key():
    lines = explain()
    assert any(line.startswith("teacher.sampling.temperature = 0.8") for line in lines)
    assert any(line.startswith("loop.near_duplicate_rouge_l = 0.95") for line in lines)


def test_teacher_fingerprint_is_cheap_stable_and_tells_teachers_apart(tmp_path, tiny_model):
    import shutil

    from llm2llm.models import fingerprint, provision

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert fingerprint(copy) == fingerprint(tiny_model)  # same files, another place: same teacher
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rope_theta": 1234.0}))
    assert fingerprint(copy) != fingerprint(tiny_model)
    shutil.copy(tiny_model / "config.json", copy / "config.json")
    # Same size, other tensor layout in the safetensors header: another teacher.
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = int.from_bytes(data[:8], "little")
    text = data[8 : 8 + header].decode()
    swapped = (
        text.replace("model.layers.0.", "model.layers.X.", 1)
        .replace("model.layers.1.", "model.layers.0.", 1)
        .replace("model.layers.X.", "model.layers.1.", 1)
    )
    assert len(swapped) == len(text) and swapped != text
    data[8 : 8 + header] = swapped.encode()
    weights.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_model)
    # Same architecture and header, other weights (another init, a fine-tune): another teacher.
    shutil.copy(tiny_model / "model.safetensors", weights)
    data = bytearray(weights.read_bytes())
    for i in range(8 + header + 1, len(data), 997):  # a fine-tune moves every weight a little
        data[i] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_model)
    assert fingerprint(provision("tiny-llama-b")) != fingerprint(tiny_model)


def test_profiles_extend_one_self_contained_profile_at_most(tmp_path):
    """What a profile runs is in at most two files: it may extend a profile that extends nothing (a
    chain, and so a cycle, is refused naming both files); the built-in ones keep to that."""
    zero2 = resolve_config("cpu-zero2")
    base = resolve_config("cpu-smollm2")
    assert (zero2.train.deepspeed, zero2.train.cpu_processes) == ("zero2", 2)
    assert zero2.data == base.data and zero2.teacher == base.teacher  # everything else from cpu-smollm2
    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(UserError, match=r"b\.yaml: extends .*a\.yaml', but it is itself extended by 'a\.yaml'"):
        resolve_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("extends: cpu-qwen\n")  # cpu-qwen extends cpu-smollm2: two levels
    with pytest.raises(UserError, match="a profile extends only a self-contained one"):
        resolve_config(str(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("extends: cpu-smollm2\nloop: {iterations: 3}\n")
    assert resolve_config(str(tmp_path / "d.yaml")).loop.iterations == 3
    # the GPU profile takes nothing from the CPU quick look
    assert "\nextends:" not in (REPO / "configs" / "profiles" / "gpu-zero3.yaml").read_text()


def test_a_run_in_use_is_refused_after_a_short_wait(tmp_path, monkeypatch):
    import time

    import llm2llm.rundir as rundir

    monkeypatch.setattr(rundir, "LOCK_WAIT_SECONDS", 1)
    config = resolve_config("tiny", {"runs_dir": str(tmp_path), "run": "busy"})
    first = rundir.RunDir(config)
    start = time.monotonic()
    with pytest.raises(UserError, match="is in use by another llm2llm process"):
        rundir.RunDir(config)
    assert time.monotonic() - start >= 1
    handlers = len(logging.getLogger().handlers)
    first.close()  # released: the next process (or the next boost in this one) gets the run
    assert len(logging.getLogger().handlers) == handlers - 1  # and its log.txt handler is gone
    with rundir.RunDir(config) as again:
        assert again.path == first.path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"train": {"deepspeed": "zero9"}},
            r"train.deepspeed 'zero9': no .*zero9.json; use a preset \(zero2, zero3, zero3_offload\)",
        ),
        ({"plan": {"mode": "parallel"}}, r"plan.mode: Input should be 'auto', 'sequential' or 'split'"),
        ({"plan": {"nodes": 0}}, r"plan.nodes: Input should be greater than or equal to 1"),
        (
            {"vllm": {"tensor_parallel_size": 0}},
            r"vllm.tensor_parallel_size: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_training_and_plan_values_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        resolve_config("tiny", overrides)
    assert "\n" not in str(info.value)


def test_generation_cache_keeps_finish_reasons_and_opens_an_older_cache(tmp_path):
    import sqlite3

    from llm2llm.gencache import GenerationCache

    old = tmp_path / "old.sqlite"  # the schema before finish reasons were kept
    db = sqlite3.connect(old)
    db.execute(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, fingerprint TEXT NOT NULL, "
        "output TEXT NOT NULL, request TEXT NOT NULL, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO answers VALUES ('k0', 't', 'f', 'an old answer', '{}', 0)")
    db.commit()
    db.close()
    cache = GenerationCache(old)
    cache.put_many([{"key": "k1", "output": "1. cut off at", "finish_reason": "length", "teacher": "t"}])
    assert cache.get_many(["k0", "k1", "k2"]) == {"k0": ("an old answer", None), "k1": ("1. cut off at", "length")}
    cache.close()
    assert GenerationCache(old).get_many(["k1"]) == {
        "k1": ("1. cut off at", "length")
    }  # reopened: no second migration
    assert (tmp_path / "old").is_dir() and len(GenerationCache(tmp_path / "old")) == 2  # one file per answer


WRITER = """
import random, sys
from llm2llm.gencache import GenerationCache
cache, me = GenerationCache(sys.argv[1]), int(sys.argv[2])
keys = [f"k{i}" for i in range(5000)]
random.Random(me).shuffle(keys)  # every writer stores every key, each in its own order
for key in keys:
    cache.put_many([{"key": key, "output": f"answer to {key}", "teacher": "t", "finish_reason": "stop", "by": me}])
"""


def test_generation_cache_with_concurrent_writers_killed_at_random(tmp_path):
    """Six real processes write the same 5,000 answers into one cache folder at once, two of them
    SIGKILLed mid-write and started again: every answer is there once, whole, written by one of
    them; a killed writer leaves at most temporary files, which no reader takes for an answer."""
    import signal
    import subprocess
    import sys

    from llm2llm.gencache import GenerationCache

    cache = tmp_path / "cache"
    start = lambda me: subprocess.Popen([sys.executable, "-c", WRITER, str(cache), str(me)])  # noqa: E731
    writers = {me: start(me) for me in range(6)}
    for me, after in ((0, 500), (1, 2500)):  # killed once that many answers are stored
        while sum(1 for _ in cache.glob("??/*.json")) < after:
            time.sleep(0.01)
        writers[me].send_signal(signal.SIGKILL)
        assert writers[me].wait() == -signal.SIGKILL, "the writer had finished before the kill"
        writers[me] = start(me)  # the rerun
    assert all(w.wait(timeout=300) == 0 for w in writers.values())
    files = sorted(cache.glob("??/*.json"))
    assert len(files) == 5000 == len(GenerationCache(cache))
    stored = GenerationCache(cache).get_many([f"k{i}" for i in range(5000)])
    assert stored == {f"k{i}": (f"answer to k{i}", "stop") for i in range(5000)}
    owners = {json.loads(f.read_text())["entry"]["request"]["by"] for f in files}
    assert owners <= set(range(6))
    assert all(f.name.endswith(".tmp") for f in cache.rglob(".*"))  # what a killed writer may leave


HOLDER = """
import sys, time
from llm2llm.config import resolve_config
from llm2llm.errors import UserError
from llm2llm.rundir import RunDir
run = RunDir(resolve_config("tiny", {"runs_dir": sys.argv[1], "run": "shared"}))
print("holding", flush=True)
while True:  # what the loop does before each phase
    try:
        run.claim.check()
    except UserError as e:
        print(f"stopped: {e}", flush=True)
        sys.exit(3)
    time.sleep(0.1)
"""


def test_opening_a_run_sweeps_leftovers_without_touching_its_own_claim(tmp_path, monkeypatch, caplog):
    """A killed process's temporary files are swept when the run is reopened; the claim renewed
    every quarter lease writes temporary files of the same form, and the sweep must not take them
    (it did: "could not renew the claim ... No such file or directory" on the first renewal)."""
    import threading

    import llm2llm.rundir as rundir

    monkeypatch.setenv("LLM2LLM_LOCK_LEASE_SECONDS", "0.004")  # renewed every millisecond
    fsync = os.fsync
    # a slow disk (each write's temp file lives 20 ms) and a busy node (the renewer runs first)
    monkeypatch.setattr(os, "fsync", lambda fd: (time.sleep(0.02), fsync(fd)))
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (start(self), time.sleep(0.005)))
    run = tmp_path / "swept"
    (run / "iter_000").mkdir(parents=True)
    for i in range(400):  # what a killed process leaves behind
        (run / "iter_000" / f".train.jsonl.{i}.tmp").write_text("half")
    config = resolve_config("tiny", {"runs_dir": str(tmp_path), "run": "swept"})
    with caplog.at_level(logging.WARNING, logger="llm2llm"), rundir.RunDir(config):
        time.sleep(0.2)
        assert json.loads((run / rundir.CLAIM_FILE).read_text())["pid"] == os.getpid()
    assert "could not renew" not in caplog.text
    assert not list((run / "iter_000").iterdir())


def test_one_holder_across_hosts_a_stopped_holder_is_taken_over_and_stops_when_it_wakes(tmp_path, monkeypatch):
    """Two hosts sharing runs/ (told apart by LLM2LLM_HOSTNAME; LLM2LLM_LOCK=claim: no flock, as on NFS
    without a lock manager): while node-a's heartbeat changes, node-b waits and is refused with the
    holder named; node-a stopped (SIGSTOP) past its lease is taken over, judged on node-b's own clock;
    node-a woken finds the run taken and stops without writing the claim; of two hosts that find the
    same lapsed claim, one takes the run."""
    import signal
    import subprocess
    import sys

    import llm2llm.rundir as rundir

    lease = 2.0
    shared = {"LLM2LLM_LOCK": "claim", "LLM2LLM_LOCK_LEASE_SECONDS": str(lease)}
    env = {**os.environ, **shared, "LLM2LLM_HOSTNAME": "node-a", "SLURM_JOB_ID": "41"}
    argv = [sys.executable, "-c", HOLDER, str(tmp_path)]
    holder = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    claim_file = tmp_path / "shared" / rundir.CLAIM_FILE
    claim = json.loads(claim_file.read_text())
    assert claim["host"] == "node-a" and claim["pid"] == holder.pid and claim["slurm_job"] == "41"

    for name, value in {**shared, "LLM2LLM_HOSTNAME": "node-b"}.items():
        monkeypatch.setenv(name, value)
    config = resolve_config("tiny", {"runs_dir": str(tmp_path), "run": "shared"})
    start = time.monotonic()
    in_use = r"is in use on host node-a \(pid \d+, Slurm job 41\); its claim in \.lock\.json"
    with pytest.raises(UserError, match=in_use):
        rundir.RunDir(config)
    assert time.monotonic() - start >= 1.5 * lease  # it waited while the heartbeat went on

    holder.send_signal(signal.SIGSTOP)  # suspended (a frozen node, a debugger): its heartbeat stops
    start = time.monotonic()
    with rundir.RunDir(config) as run:  # waits one lease of no change, then takes the run over
        assert lease <= time.monotonic() - start <= lease + 3
        mine = json.loads(claim_file.read_text())
        assert mine["host"] == "node-b" and mine["pid"] == os.getpid()
        holder.send_signal(signal.SIGCONT)  # node-a wakes up: it must stop, not write on
        assert holder.wait(timeout=30) == 3
        out = holder.stdout.read()
        assert "stopped: run" in out and "was taken over by host node-b" in out
        assert json.loads(claim_file.read_text()) == mine  # node-a never rewrote the claim
        run.claim.check()  # still ours
    assert not claim_file.exists()  # released with the run

    # a claim left by a dead holder, found by two hosts at once: exactly one of them takes the run
    claim_file.write_text(json.dumps({"nonce": "dead", "host": "node-z", "pid": 1}))
    racers = [
        subprocess.Popen(
            argv,
            env={**os.environ, **shared, "LLM2LLM_HOSTNAME": f"node-{n}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("c", "d")
    ]
    time.sleep(lease * 4)
    alive = [r for r in racers if r.poll() is None]
    assert len(alive) == 1  # the winner holds the run
    loser = next(r for r in racers if r is not alive[0])
    assert loser.returncode == 1 and "is in use on host node-" in loser.stderr.read()
    assert json.loads(claim_file.read_text())["pid"] == alive[0].pid
    alive[0].kill()
    alive[0].wait()


def test_a_claim_left_by_a_killed_process_of_this_host_is_taken_over_at_once_and_its_leftovers_swept(tmp_path):
    import llm2llm.rundir as rundir
    from llm2llm.claim import this_host

    run = tmp_path / "killed"
    (run / "iter_000").mkdir(parents=True)
    (run / rundir.CLAIM_FILE).write_text(json.dumps({"nonce": "dead", "host": this_host(), "pid": 2**22 + 1}))
    (run / ".lock-dead.json").write_text('{"count": 7}')
    (run / "iter_000" / ".train.jsonl.x.tmp").write_text("half")
    start = time.monotonic()
    with rundir.RunDir(resolve_config("tiny", {"runs_dir": str(tmp_path), "run": "killed"})) as opened:
        assert time.monotonic() - start < 5  # its flock is free: no lease to wait for
        assert json.loads((run / rundir.CLAIM_FILE).read_text())["nonce"] == opened.claim.nonce
        assert not (run / "iter_000" / ".train.jsonl.x.tmp").exists() and not (run / ".lock-dead.json").exists()


def test_every_numeric_config_key_has_a_range():
    """A number a user sets is checked against what the code can take (issue 28: a seed beyond numpy's range
    passed and failed mid-run); a new numeric key without bounds fails here."""
    import typing

    from pydantic import BaseModel

    from llm2llm.config import RunConfig

    unbounded = []

    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")
            elif {int, float} & set(typing.get_args(field.annotation) or [field.annotation]) and not field.metadata:
                unbounded.append(prefix + name)

    walk(RunConfig)
    assert unbounded == []
