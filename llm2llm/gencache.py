"""A content-addressed cache of teacher answers, shared by every run that points at it.

A request's key hashes (teacher fingerprint, rendered prompt, sampling parameters, sample index),
so a rerun, a resumed run or another run with the same teacher and prompts never asks the teacher
again, and a different teacher never gets another's answers.

The cache is a folder of immutable files, one per answer (`<folder>/<2 hex>/<sha256 of the key>.json`),
each written under a temporary name and linked into place: a link either creates the name or
fails because it exists, atomically, on a local disk and on NFS or Lustre alike, so any number of
runs on any number of hosts may write one cache at once with no lock, and the first answer for a
key wins. Nothing is fsync'd: the run's own teacher_outputs.jsonl is the durable record; a cache
file torn by a power cut fails its check on read, counts as a miss and is written again.
(Until 2026-12 the cache was one SQLite file in WAL mode, which SQLite's documentation rules out
on a network file system; such a file is imported once, docs/engines.md.)

A read trusts only what this user's runs wrote: each file carries an HMAC-SHA256 of its entry under
a key of the user's own (~/.config/llm2llm/cache-key, 0600, outside the cache), so an entry planted
or altered by anyone else (a stale file from before the check included) is a miss, counted in
`rejected`, asked again and replaced. A cache shared with a group (folder mode 2770, `cache_group`)
uses a key in the folder that the group can read: it trusts what any member of the group wrote.
Every entry records who wrote it, on which host, with which engine, server and model.
"""

from __future__ import annotations

import errno
import getpass
import hashlib
import hmac
import json
import os
import secrets
import socket
import sqlite3
import stat
import time
import uuid
from pathlib import Path

from llm2llm.errors import UserError

KEY_BYTES = 32
GROUP_KEY = ".group-key"


def user_key_path() -> Path:
    """Where this user's cache key lives: outside every cache, readable by the user only."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config_home) / "llm2llm" / "cache-key"


def is_group_cache(path: Path) -> bool:
    """A cache folder shared with its group: setgid and group rwx (what private_folder makes of it)."""
    mode = path.stat().st_mode
    return bool(mode & stat.S_ISGID) and mode & 0o070 == 0o070


def read_key(path: Path, group: bool = False) -> bytes:
    """The key in `path`, created (random, O_EXCL) if absent: 0600, or 0640 for a group cache. A key
    file that others could write (or, for a user's key, read) is refused: it would let them forge entries."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.path.lexists(path):  # written whole under a temporary name, then linked: a reader never sees half
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as f:
            os.fchmod(f.fileno(), 0o640 if group else 0o600)
            f.write(secrets.token_hex(KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: its key it is
            pass
        finally:
            tmp.unlink()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise UserError(f"cannot read the cache key {path} ({e.strerror}); remove it if it is a link and rerun")
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        loose = 0o022 if group else 0o077
        if stat.S_IMODE(info.st_mode) & loose or (not group and info.st_uid != os.getuid()):
            raise UserError(
                f"the cache key {path} is open to others (mode {stat.S_IMODE(info.st_mode):o}, owner uid "
                f"{info.st_uid}), who could forge cache entries; remove it (a new one is made) and rerun"
            )
        key = f.read().strip()
    if len(key) != 2 * KEY_BYTES:
        raise UserError(f"the cache key {path} is damaged ({len(key)} characters); remove it and rerun")
    return bytes.fromhex(key)


def _mac(key: bytes, entry: dict) -> str:
    return hmac.new(key, json.dumps(entry, sort_keys=True, ensure_ascii=False).encode(), hashlib.sha256).hexdigest()


def writer(spec=None) -> dict:
    """Who writes an entry: the user, the host and, for a teacher, the engine, server and model."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    who = {"user": user, "uid": os.getuid(), "host": socket.gethostname()}
    if spec is not None:
        who.update(
            engine=spec.kind,
            server=(f"unix:{spec.socket}" if spec.socket else spec.url),
            model=str(spec.model),
            served_model=spec.served_model,
        )
    return who


class GenerationCache:
    def __init__(self, path: Path, writer: dict | None = None):
        """path: the cache folder (a path ending in .sqlite, an older setting, names the folder of
        its stem). An older cache at <folder>.sqlite has its answers imported first. writer: what
        each new entry records of who wrote it (gencache.writer())."""
        path = Path(path)
        self.path = path.with_suffix("") if path.suffix == ".sqlite" else path
        self.path.mkdir(parents=True, exist_ok=True)
        self.group = is_group_cache(self.path)
        self.key = read_key(self.path / GROUP_KEY if self.group else user_key_path(), self.group)
        self.writer = writer or {}
        self.rejected = 0  # entries present but not verified (planted, altered, or from before the check)
        legacy = self.path.with_name(self.path.name + ".sqlite")
        if legacy.is_file():
            self._import_sqlite(legacy)

    def _file(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.path / digest[:2] / f"{digest[2:]}.json"

    def _read(self, key: str) -> dict | None:
        """The verified entry for `key`, or None: absent, torn by a crash, or failing the check."""
        try:
            fd = os.open(self._file(key), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # absent, a planted link (ELOOP), or a file we may not read
            return None
        try:
            with os.fdopen(fd, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError):
            return None
        entry = stored.get("entry") if isinstance(stored, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(stored.get("mac"), str)
            or not hmac.compare_digest(stored["mac"], _mac(self.key, entry))
            or entry.get("key") != key
            or "output" not in entry
        ):
            return None
        return entry

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """{key: (output, finish_reason)} for the keys that are stored."""
        found = {}
        for key in keys:
            record = self._read(key)
            if record is not None:
                found[key] = (record["output"], record.get("finish_reason"))
            elif os.path.lexists(self._file(key)):
                self.rejected += 1
        return found

    def put_many(self, records: list[dict]) -> None:
        """records: {key, output, teacher, teacher_fingerprint, ...}; the first answer for a key wins."""
        now = time.time()
        for r in records:
            entry = {
                "key": r["key"],
                "output": r["output"],
                "finish_reason": r.get("finish_reason"),
                "teacher": r.get("teacher", ""),
                "fingerprint": r.get("teacher_fingerprint", ""),
                "request": {k: v for k, v in r.items() if k not in ("output", "finish_reason")},
                "created": now,
                "writer": self.writer,
            }
            self._put(r["key"], entry)

    def _put(self, key: str, entry: dict) -> None:
        final = self._file(key)
        if self._read(key) is not None:
            return
        if not final.parent.is_dir():
            final.parent.mkdir(exist_ok=True)
            if self.group:  # the process's umask (077) would close it to the group
                os.chmod(final.parent, 0o2770)
        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.tmp")
        text = json.dumps({"mac": _mac(self.key, entry), "entry": entry}, ensure_ascii=False)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if self.group:
                os.fchmod(f.fileno(), 0o660)
            f.write(text)
        try:
            os.link(tmp, final)  # atomic: creates the name, or fails because another writer was first
        except FileExistsError:
            if self._read(key) is None:  # torn by a crash, or failing the check: ours replaces it
                os.replace(tmp, final)
        except OSError as e:  # a file system without hard links (some FUSE mounts): rename, last one wins
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
            os.replace(tmp, final)
        tmp.unlink(missing_ok=True)

    def _import_sqlite(self, path: Path) -> None:
        """An older cache (one SQLite file): its answers become files here, once. Concurrent openers
        may import side by side (each answer is written at most once); the file is kept."""
        marker = self.path / f".imported-{path.name}"
        if marker.exists():
            return
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
            reason = "finish_reason" if "finish_reason" in columns else "NULL"
            for key, output, request, teacher, fingerprint, created, finish in db.execute(
                f"SELECT key, output, request, teacher, fingerprint, created, {reason} FROM answers"
            ):
                entry = {
                    "key": key,
                    "output": output,
                    "finish_reason": finish,
                    "teacher": teacher,
                    "fingerprint": fingerprint,
                    "request": json.loads(request or "{}"),
                    "created": created,
                    "writer": {**self.writer, "imported_from": str(path)},
                }
                self._put(key, entry)
        finally:
            db.close()
        marker.write_text(f"{path}\n")

    def __len__(self) -> int:
        return sum(1 for _ in self.path.glob("??/*.json"))

    def close(self) -> None:
        """Nothing is held open; kept so callers need not know."""
