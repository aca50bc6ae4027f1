"""Crash-safe files for the run directory.

Every file that marks a phase as done is written whole to a temporary name, fsynced and renamed,
so a reader sees the old file or the new one, never half of one. Streams of records that are
produced slowly (teacher answers, predictions) go to an append-only JSONL log keyed by record;
a torn last line left by kill -9 is dropped when the log is opened again. No open here follows a
symbolic link at the file's own name (O_NOFOLLOW): a link planted in a run folder is an error, not a
truncate or an append to whatever it points at.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from llm2llm.errors import UserError
from llm2llm.private import current_umask


def file_mode() -> int:
    """What a plain open() would give a new file now (mkstemp makes 0600 whatever the umask)."""
    return 0o666 & ~current_umask()


def open_nofollow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link at `path` with a one-line error."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(
                f"{path} is a symbolic link; llm2llm does not follow links it did not make in a run folder "
                f"(someone may have planted it): remove it and rerun"
            ) from None
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush every file under a folder (and the folders) to disk: a checkpoint renamed into place
    must not turn out empty after a power loss."""
    for item in sorted(Path(path).rglob("*")):
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif item.is_dir():
            fsync_dir(item)
    fsync_dir(path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path` (named .<name>...tmp, swept by RunDir), fsync, rename,
    fsync the folder: a reader sees the old file or the whole new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_tree(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class RecordLog:
    """Append-only JSONL of records with a unique `key`: resumable, never duplicated.

    Opening the log reads what a previous (possibly killed) process wrote, drops a torn last
    line, and exposes the stored records by key; `append` writes and fsyncs one record at a time.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        good_bytes = 0
        if os.path.lexists(self.path):
            with os.fdopen(open_nofollow(self.path, os.O_RDONLY), "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # torn write from a killed process
                    try:
                        record = json.loads(raw)
                    except json.JSONDecodeError:
                        break
                    self.records.setdefault(record["key"], record)
                    good_bytes += len(raw)
                size = os.fstat(f.fileno()).st_size
            if good_bytes != size:
                with os.fdopen(open_nofollow(self.path, os.O_RDWR), "r+b") as f:
                    f.truncate(good_bytes)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, records: Iterable[dict]) -> None:
        lines = []
        for record in records:
            if record["key"] in self.records:
                continue
            self.records[record["key"]] = record
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if not lines:
            return
        with os.fdopen(open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
