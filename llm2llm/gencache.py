"""A content-addressed cache of teacher answers, shared by every run that points at it.

A request's key hashes (teacher fingerprint, rendered prompt, sampling parameters, sample index),
so a rerun, a resumed run or another run with the same teacher and prompts never asks the teacher
again, and a different teacher never gets another's answers. SQLite (WAL) makes each stored batch
durable at commit and lets several runs share one file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    output TEXT NOT NULL,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    finish_reason TEXT
)"""


class GenerationCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)
        # A cache written before finish reasons were kept: its answers' reasons stay unknown (NULL).
        if "finish_reason" not in {row[1] for row in self.db.execute("PRAGMA table_info(answers)")}:
            try:
                self.db.execute("ALTER TABLE answers ADD COLUMN finish_reason TEXT")
            except sqlite3.OperationalError as e:  # another run migrated it between the check and here
                if "duplicate column" not in str(e):
                    raise
        self.db.commit()

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """{key: (output, finish_reason)} for the keys that are stored."""
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, output, finish_reason FROM answers WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update((key, (output, reason)) for key, output, reason in rows)
        return found

    def put_many(self, records: list[dict]) -> None:
        """records: {key, output, teacher, teacher_fingerprint, ...}; the first answer for a key wins."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO answers (key, teacher, fingerprint, output, request, created, finish_reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r["key"],
                        r.get("teacher", ""),
                        r.get("teacher_fingerprint", ""),
                        r["output"],
                        json.dumps(
                            {k: v for k, v in r.items() if k not in ("output", "finish_reason")}, ensure_ascii=False
                        ),
                        now,
                        r.get("finish_reason"),
                    )
                    for r in records
                ],
            )

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()
