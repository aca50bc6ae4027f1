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
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path


class GenerationCache:
    def __init__(self, path: Path):
        """path: the cache folder (a path ending in .sqlite, an older setting, names the folder of
        its stem). An older cache at <folder>.sqlite has its answers imported first."""
        path = Path(path)
        self.path = path.with_suffix("") if path.suffix == ".sqlite" else path
        self.path.mkdir(parents=True, exist_ok=True)
        legacy = self.path.with_name(self.path.name + ".sqlite")
        if legacy.is_file():
            self._import_sqlite(legacy)

    def _file(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.path / digest[:2] / f"{digest[2:]}.json"

    def _read(self, key: str) -> dict | None:
        try:
            record = json.loads(self._file(key).read_text())
        except (OSError, ValueError):  # absent, or torn by a crash: a miss
            return None
        return record if isinstance(record, dict) and record.get("key") == key and "output" in record else None

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """{key: (output, finish_reason)} for the keys that are stored."""
        found = {}
        for key in keys:
            record = self._read(key)
            if record is not None:
                found[key] = (record["output"], record.get("finish_reason"))
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
            }
            self._put(r["key"], json.dumps(entry, ensure_ascii=False))

    def _put(self, key: str, text: str) -> None:
        final = self._file(key)
        if self._read(key) is not None:
            return
        final.parent.mkdir(exist_ok=True)
        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(text)
        try:
            os.link(tmp, final)  # atomic: creates the name, or fails because another writer was first
        except FileExistsError:
            if self._read(key) is None:  # a torn file from a crash: replace it
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
                }
                self._put(key, json.dumps(entry, ensure_ascii=False))
        finally:
            db.close()
        marker.write_text(f"{path}\n")

    def __len__(self) -> int:
        return sum(1 for _ in self.path.glob("??/*.json"))

    def close(self) -> None:
        """Nothing is held open; kept so callers need not know."""
