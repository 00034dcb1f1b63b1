"""Files on the model volume: atomic publication, per-file locks shared by every worker process,
leftover cleanup, and the sidecar that records what a published file was verified to be.

A model file only ever appears under its final name by `os.replace` of a complete, fsynced,
verified temporary file in the same directory, so a crash or a kill mid-download leaves at worst a
`.part` file, which the next start removes (unless another worker holds its lock and is still
writing it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import attrs

PART_SUFFIX = ".part"
LOCK_DIR = ".locks"


@attrs.frozen
class FileRecord:
    """What a published file was verified to be (stored beside it as `.NAME.meta.json`)."""

    size: int
    sha256: str
    mtime_ns: int
    etag: str | None = None
    version_id: str | None = None


def record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta.json")


def read_record(path: Path) -> FileRecord | None:
    """The record, if it still describes the file on disk (same size and modification time)."""
    try:
        record = FileRecord(**json.loads(record_path(path).read_text()))
        stat = path.stat()
    except (OSError, ValueError, TypeError):
        return None
    return record if (record.size, record.mtime_ns) == (stat.st_size, stat.st_mtime_ns) else None


def write_record(path: Path, *, sha256: str, etag: str | None = None, version_id: str | None = None) -> FileRecord:
    stat = path.stat()
    record = FileRecord(size=stat.st_size, sha256=sha256, mtime_ns=stat.st_mtime_ns, etag=etag, version_id=version_id)
    target = record_path(path)
    temporary = target.with_name(target.name + PART_SUFFIX)
    temporary.write_text(json.dumps(attrs.asdict(record)))
    os.replace(temporary, target)
    return record


def sha256_of(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An flock on MODEL_DIR/.locks/NAME.lock: held by one process (worker) at a time."""
    lock_dir = path.parent / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{path.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def temporary_beside(path: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """A new temporary file in `path`'s directory; removed unless the caller published it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{PART_SUFFIX}")
    try:
        with temporary.open("xb") as handle:
            yield temporary, handle
    finally:
        temporary.unlink(missing_ok=True)


def publish(temporary: Path, handle: IO[bytes], final: Path) -> None:
    """fsync the data, rename into place, fsync the directory: the file is whole or absent."""
    handle.flush()
    os.fsync(handle.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_leftovers(model_dir: Path) -> list[Path]:
    """Delete `.part` files no live download owns (its file lock is free)."""
    removed = []
    for part in model_dir.glob(f".*{PART_SUFFIX}"):
        with exclusive_lock(model_dir / _owner_name(part.name), blocking=False) as acquired:
            if acquired:
                part.unlink(missing_ok=True)
                removed.append(part)
    return removed


def _owner_name(part_name: str) -> str:
    """The model file a leftover belongs to: `.NAME.PID.RANDOM.part` or `.NAME.meta.json.part` → NAME."""
    stem = part_name[1 : -len(PART_SUFFIX)]
    if stem.endswith(".meta.json"):
        return stem.removesuffix(".meta.json")
    return stem.rsplit(".", 2)[0]
