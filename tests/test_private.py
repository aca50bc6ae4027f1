"""Private by default on a shared node (issue 28): a run's files are its user's alone whatever the
umask, folders others can write to are refused before anything runs, no pickle in a run folder,
no planted symbolic link followed, and a generation cache that trusts only entries signed with
the user's own key (or, shared with a group, the group's)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import cli_in_process, run_cli, tiny_boost_args

from llm2llm.config import SamplingConfig
from llm2llm.engines import EngineSpec
from llm2llm.errors import UserError
from llm2llm.gencache import GROUP_KEY, GenerationCache
from llm2llm.generation import generate_cached, request_key
from llm2llm.runtime.phases import _open_log
from llm2llm.store import RecordLog

ROOT = os.getuid() == 0
PICKLE_PROTOCOLS = {bytes([0x80, n]) for n in range(2, 6)}


def pickles(folder: Path) -> list[Path]:
    """Files that are pickles: by name, or by the opening bytes of pickle protocols 2-5 (torch.save too)."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix in (".pkl", ".pickle", ".bin", ".pt") or path.read_bytes()[:2] in PICKLE_PROTOCOLS:
            found.append(path)
    return found


def open_to_others(folder: Path) -> list[str]:
    """Everything under `folder` (itself included) that its group or other users could read, write or enter."""
    loose = []
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode & 0o077:
            loose.append(f"{path.relative_to(folder.parent)} {mode:o}")
    return loose


def test_a_run_and_its_caches_are_private_whatever_the_umask_and_hold_no_pickle(tmp_path, data_dir):
    saved = os.umask(0o022)  # the usual umask: what the run writes would be world-readable
    try:
        run_cli(*tiny_boost_args(tmp_path, data_dir, "private", "--set", "loop.share_iteration0=true"), cwd=tmp_path)
    finally:
        os.umask(saved)
    runs = tmp_path / "runs"
    for folder in ("private", "generation-cache", "iteration0-cache"):
        assert (runs / folder).is_dir()
        assert open_to_others(runs / folder) == []
    assert any((runs / "generation-cache").glob("??/*.json")) and any((runs / "private").rglob("*.safetensors"))
    assert pickles(runs) == []  # the training request is JSON, and the Trainer's training_args.bin is gone
    log = json.loads(next((runs / "private").glob("iter_*/student/train_log.json")).read_text())
    assert log["training_args"]["learning_rate"] > 0  # the Trainer's arguments kept as JSON instead
    if ROOT:  # another user cannot enter the run folder or the cache
        for folder in ("private", "generation-cache"):
            done = subprocess.run(
                ["/usr/bin/python3", "-c", "import os, sys; os.listdir(sys.argv[1])", str(runs / folder)],
                preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
                capture_output=True,
                text=True,
                cwd="/",
            )
            assert "PermissionError" in done.stderr


@pytest.mark.parametrize(
    "folder, mode, named, fix",
    [
        ("runs/r", 0o777, "run folder", "chmod 700"),
        ("runs/r", 0o770, "run folder", "chmod 700"),
        ("runs", 0o777, "runs folder", "chmod o-w"),  # a team's runs folder may be group-writable, not world
        ("runs/generation-cache", 0o757, "generation cache", "chmod 700"),
        ("runs/iteration0-cache", 0o775, "iteration-0 cache", "chmod 700"),
    ],
)
def test_a_folder_others_can_write_is_refused_before_anything_runs(tmp_path, data_dir, folder, mode, named, fix):
    path = tmp_path / folder
    path.mkdir(parents=True)
    os.chmod(path, mode)
    before = sorted(p.name for p in (tmp_path / "runs").rglob("*"))
    result = cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, "r", "--set", "loop.share_iteration0=true"), cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named} {path} is writable by")
    assert fix in lines[0]
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == before  # nothing created


@pytest.mark.parametrize("mode", [0o1777, 0o2770])  # like /tmp; a team's folder
def test_a_shared_runs_folder_is_fine_and_an_older_run_in_it_is_closed(tmp_path, data_dir, mode):
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    os.chmod(runs, mode)  # /tmp's sticky bit: nobody can rename or remove what another user put there
    os.chmod(runs / "r", 0o755)  # made before runs were private: readable by all, writable by its owner only
    cli_in_process(*tiny_boost_args(tmp_path, data_dir, "r", "--set", "loop.iterations=0"), cwd=tmp_path)
    assert stat.S_IMODE((runs / "r").stat().st_mode) == 0o700


@pytest.mark.skipif(not ROOT, reason="giving a folder to another user needs root")
def test_a_run_folder_of_another_user_is_refused(tmp_path, data_dir):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    os.chmod(tmp_path / "runs" / "r", 0o700)
    os.chown(tmp_path / "runs" / "r", 65534, 65534)
    result = cli_in_process(*tiny_boost_args(tmp_path, data_dir, "r"), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "belongs to another user (uid 65534)" in result.stderr


def test_a_planted_symlink_is_refused_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\nwith a second line that is not JSON\n")
    link = tmp_path / "run" / "teacher_outputs.jsonl"
    link.parent.mkdir()
    link.symlink_to(victim)
    with pytest.raises(UserError, match=r"teacher_outputs\.jsonl is a symbolic link; .* remove it and rerun"):
        RecordLog(link)  # opening a log truncates a torn tail: it must not truncate the victim
    log_link = tmp_path / "run" / "logs" / "train.log"
    log_link.parent.mkdir()
    log_link.symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        _open_log(log_link, "train")
    assert victim.read_text() == "someone else's file\nwith a second line that is not JSON\n"


def _entry_file(cache: GenerationCache, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return cache.path / digest[:2] / f"{digest[2:]}.json"


def test_the_cache_trusts_only_entries_signed_with_the_users_key(tmp_path, monkeypatch):
    cache = GenerationCache(tmp_path / "cache", {"user": "me", "engine": "vllm"})
    cache.put_many([{"key": k, "output": f"answer {k}", "teacher": "t"} for k in ("mine", "altered", "planted")])
    assert cache.get_many(["mine"]) == {"mine": ("answer mine", None)}
    stored = json.loads(_entry_file(cache, "mine").read_text())
    assert stored["entry"]["writer"] == {"user": "me", "engine": "vllm"}
    key_file = Path(os.environ["XDG_CONFIG_HOME"]) / "llm2llm" / "cache-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # altered: a changed answer no longer matches its signature
    altered = _entry_file(cache, "altered")
    record = json.loads(altered.read_text())
    record["entry"]["output"] = "a planted answer"
    altered.write_text(json.dumps(record))
    # planted: written by someone with another key (another user's own cache key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "intruder"))
    intruder = GenerationCache(tmp_path / "elsewhere")
    intruder.put_many([{"key": "planted", "output": "a planted answer", "teacher": "t"}])
    os.replace(_entry_file(intruder, "planted"), _entry_file(cache, "planted"))
    # unsigned: an entry as caches stored them before entries were signed
    unsigned = {"key": "old", "output": "an old answer", "finish_reason": "stop"}
    _entry_file(cache, "old").parent.mkdir(exist_ok=True)
    _entry_file(cache, "old").write_text(json.dumps(unsigned))
    monkeypatch.undo()

    reader = GenerationCache(tmp_path / "cache")
    assert reader.get_many(["mine", "altered", "planted", "old"]) == {"mine": ("answer mine", None)}
    assert reader.rejected == 3
    # asked again, this user's answers replace them
    reader.put_many([{"key": k, "output": f"new {k}", "teacher": "t"} for k in ("altered", "planted", "old")])
    assert GenerationCache(tmp_path / "cache").get_many(["altered", "planted", "old"]) == {
        k: (f"new {k}", None) for k in ("altered", "planted", "old")
    }


def test_a_cache_key_others_can_read_is_refused(tmp_path):
    GenerationCache(tmp_path / "cache")
    key_file = Path(os.environ["XDG_CONFIG_HOME"]) / "llm2llm" / "cache-key"
    os.chmod(key_file, 0o644)
    try:
        with pytest.raises(UserError, match=r"cache key .* is open to others \(mode 644"):
            GenerationCache(tmp_path / "cache")
    finally:
        os.chmod(key_file, 0o600)


def test_a_cache_shared_with_a_group_is_group_readable_and_signed_with_the_groups_key(tmp_path, data_dir):
    result = cli_in_process(
        *tiny_boost_args(tmp_path, data_dir, "grouped", "--set", "cache_group=true", "--set", "loop.iterations=1"),
        cwd=tmp_path,
    )
    assert result.returncode == 0
    cache = tmp_path / "runs" / "generation-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o2770
    assert stat.S_IMODE((cache / GROUP_KEY).stat().st_mode) == 0o640
    entries = list(cache.glob("??/*.json"))
    assert entries and {stat.S_IMODE(p.stat().st_mode) for p in entries} == {0o660}
    assert {stat.S_IMODE(p.parent.stat().st_mode) for p in entries} == {0o2770}
    assert open_to_others(tmp_path / "runs" / "grouped") == []  # the run itself stays private


def test_a_cache_that_takes_no_writes_is_a_warning_and_the_answers_are_kept(tmp_path, tiny_model, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(256):  # every entry's folder is a file: each write fails (as root too, unlike a chmod)
        (cache / f"{i:02x}").write_text("")
    requests = [{"key": request_key("t", f"prompt {i}", i), "prompt": f"Say {i}:"} for i in range(3)]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=4)
    spec = EngineSpec("transformers", tiny_model)
    with caplog.at_level(logging.WARNING):
        answers, stats = generate_cached(spec, requests, tmp_path / "out.jsonl", sampling, 3, "t", cache_path=cache)
    assert stats.generated == 3 and set(answers) == {r["key"] for r in requests}
    assert len(RecordLog(tmp_path / "out.jsonl").records) == 3  # the run's own record came first
    assert f"the generation cache {cache} took no more answers after" in caplog.text


def test_compare_html_escapes_every_name():
    from llm2llm.report_html import render_compare_html

    table = (
        "# Methods on <b>task</b>\n\n| run | test acc |\n|---|---|\n"
        "| <script>alert(1)</script> | 50.0 |\n| [x](javascript:alert(1)) <https://example.org> | 60.0 |\n"
        "\n![test accuracy per iteration](compare.png)\n"
    )
    runs = [{"name": "<img src=x onerror=alert(1)>", "href": None, "method": "m<i>", "seed": 0}]
    page = render_compare_html(table, b"\x89PNG", runs)
    assert "<script>" not in page and "<img src=x" not in page and "<b>task" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page and 'href="https://example.org' not in page
    assert "<table>" in page and "<td>50.0</td>" in page  # the table itself still renders
