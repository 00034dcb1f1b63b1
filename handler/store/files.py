"""Files on the model volume: atomic publication, per-file locks shared by every worker process,
leftover cleanup, and the records of what a published file was verified to be.

A model file only ever appears under its final name by `os.replace` of a complete, fsynced,
verified temporary file in the same directory, so a crash or a kill mid-download leaves at worst a
`.part` file, which the next start removes (unless another worker holds its lock and is still
writing it).

Records (`.NAME.meta.json` beside the file) save hashing a multi-GB file again at the next start.
They are a cache, never a requirement: on a read-only volume (models baked into an image layer or a
read-only mount) the record lives in memory for the life of the process instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import attrs

PART_SUFFIX = ".part"
LOCK_DIR = ".locks"
# A sync that finds another process downloading its file tries the lock again this often, and gives up
# after LOCK_WAIT_S (a download that takes longer than that is stuck, not slow).
LOCK_POLL_S = 0.1
LOCK_WAIT_S = 3600.0


@attrs.frozen
class FileRecord:
    """What a published file was verified to be (stored beside it as `.NAME.meta.json`)."""

    size: int
    sha256: str
    mtime_ns: int
    etag: str | None = None
    version_id: str | None = None


RECORD_SUFFIX = ".meta.json"
STALE_RECORD_PART_S = 3600  # a record is written in milliseconds: older temporaries are leftovers
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (1, 2, 3)


def record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


class RecordBook:
    """Records of verified files: on disk beside each file where the volume is writable, in memory
    where it is not. Writers never collide (unique temporary names) and never fail a request."""

    def __init__(self) -> None:
        self._in_memory: dict[Path, FileRecord] = {}

    def read(self, path: Path) -> FileRecord | None:
        """The record, if it still describes the file on disk (same size and modification time)."""
        try:
            stat = path.stat()
        except OSError:
            return None
        # This process's record first; the one on disk when another worker has since replaced the file.
        record = self._in_memory.get(path)
        if not _describes(record, stat):
            record = _load_record(record_path(path))
        return record if _describes(record, stat) else None

    def write(self, path: Path, *, sha256: str, etag: str | None = None, version_id: str | None = None) -> FileRecord:
        stat = path.stat()
        record = FileRecord(size=stat.st_size, sha256=sha256, mtime_ns=stat.st_mtime_ns, etag=etag,
                            version_id=version_id)
        self._in_memory[path] = record
        target = record_path(path)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.{os.urandom(4).hex()}{PART_SUFFIX}")
        try:
            temporary.write_text(json.dumps(attrs.asdict(record)))
            os.replace(temporary, target)
        except OSError:  # a read-only volume: the record in memory serves this process
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        return record

    def forget(self, path: Path) -> None:
        self._in_memory.pop(path, None)
        record_path(path).unlink(missing_ok=True)


def _describes(record: FileRecord | None, stat: os.stat_result) -> bool:
    return record is not None and (record.size, record.mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def _load_record(where: Path) -> FileRecord | None:
    try:
        return FileRecord(**json.loads(where.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def has_gguf_header(path: Path) -> bool:
    """Whether `path` starts like a GGUF file: magic, a known version, plausible counts."""
    try:
        with path.open("rb") as source:
            header = source.read(24)
    except OSError:
        return False
    if len(header) < 24 or header[:4] != GGUF_MAGIC:
        return False
    version = int.from_bytes(header[4:8], "little")
    tensors, keys = int.from_bytes(header[8:16], "little"), int.from_bytes(header[16:24], "little")
    return version in GGUF_VERSIONS and tensors < 1 << 24 and keys < 1 << 20


def sha256_of(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path, *, blocking: bool = True, stop: threading.Event | None = None,
                   wait_s: float = LOCK_WAIT_S, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """An flock on MODEL_DIR/.locks/NAME.lock: held by one process (worker) at a time. Yields whether it
    was taken: not `blocking`, at once; else, while another process holds it, `on_wait` is told and it is
    tried again every LOCK_POLL_S until it is free, `stop` is set or `wait_s` has passed. (A blocking
    flock cannot be interrupted: a stopping server would wait out another process's whole download.)"""
    lock_dir = path.parent / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{path.name}.lock").open("a") as handle:
        taken = _try_lock(handle)
        if not taken and blocking:
            if on_wait is not None:
                on_wait()
            deadline, stop = time.monotonic() + wait_s, stop or threading.Event()
            while not taken and not stop.wait(LOCK_POLL_S) and time.monotonic() < deadline:
                taken = _try_lock(handle)
        if not taken:
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
    """Delete `.part` files nobody is writing: a download's when its file lock is free, a record's
    when it is old (records are written without the lock, in milliseconds)."""
    removed = []
    for part in model_dir.glob(f".*{PART_SUFFIX}"):
        if f"{RECORD_SUFFIX}." in part.name:
            with contextlib.suppress(OSError):
                if time.time() - part.stat().st_mtime > STALE_RECORD_PART_S:
                    part.unlink()
                    removed.append(part)
            continue
        with exclusive_lock(model_dir / _owner_name(part.name), blocking=False) as acquired:
            if acquired:
                part.unlink(missing_ok=True)
                removed.append(part)
    return removed


def _owner_name(part_name: str) -> str:
    """The model file a download's leftover belongs to: `.NAME.PID.RANDOM.part` → NAME."""
    return part_name[1 : -len(PART_SUFFIX)].rsplit(".", 2)[0]
