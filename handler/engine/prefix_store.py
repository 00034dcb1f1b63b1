"""Prompt prefixes' KV state kept on the volume, so a new process skips re-reading a long prompt.

When a model has read a prompt of at least `min_tokens` that no saved prefix covers yet, the engine
hands this store a copy of that sequence's KV state; a background thread writes it under
`DIR/NAMESPACE/`, atomically (temporary name, then rename). A request in any later process whose
prompt starts with a saved prefix gets the state back before its turn and reads only the rest.

A namespace is everything that makes a state valid: the model file, the context options that shape
its KV cache, and the llama.cpp build. A file is trusted only if its checksum matches: a corrupt,
truncated or foreign file is removed, never loaded. The directory is kept under `budget_bytes`,
evicting the least recently used.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import attrs

log = logging.getLogger(__name__)
MAGIC = b"GGUF-KV-PREFIX-1\n"
SUFFIX = ".kvprefix"


@attrs.frozen
class SavedPrefix:
    tokens: tuple[int, ...]  # the saved prompt's tokens (the state holds exactly these)
    common: int  # how many leading tokens the asking prompt shares with them
    state: bytes


@attrs.define
class _Entry:
    path: Path
    tokens: tuple[int, ...]
    size: int


def namespace(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


def _encode(tokens: Sequence[int], state: bytes) -> bytes:
    token_bytes = array.array("i", tokens).tobytes()
    header = json.dumps({"tokens": len(tokens), "state": len(state),
                         "sha256": hashlib.sha256(token_bytes + state).hexdigest()}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + token_bytes + state


def _read(path: Path, *, with_state: bool) -> tuple[tuple[int, ...], bytes]:
    """(tokens, state) of a file; ValueError if it is not a whole, intact prefix file."""
    with path.open("rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a prefix file")
        (length,) = struct.unpack("<I", file.read(4))
        header = json.loads(file.read(min(length, 4096)))
        token_bytes = file.read(4 * int(header["tokens"]))
        state = file.read(int(header["state"]) + 1) if with_state else b""
    tokens = array.array("i")
    tokens.frombytes(token_bytes)
    if with_state and (len(state) != header["state"]
                       or hashlib.sha256(token_bytes + state).hexdigest() != header["sha256"]):
        raise ValueError("truncated or corrupt")
    return tuple(tokens), state


class PrefixStore:
    def __init__(self, directory: Path, budget_bytes: int, min_tokens: int) -> None:
        self.directory, self.budget_bytes, self.min_tokens = directory, budget_bytes, min_tokens
        self._lock = threading.Lock()
        self._index: dict[str, list[_Entry]] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kv-prefix-writer")
        self._pending: list[Future[None]] = []

    def find(self, space: str, prompt: Sequence[int]) -> SavedPrefix | None:
        """The saved prefix sharing the most leading tokens (at least `min_tokens`) with `prompt`
        (blocking: reads the file)."""
        with self._lock:
            entries = self._entries(space)
            best = max(entries, key=lambda entry: _common(entry.tokens, prompt), default=None)
        if best is None or (common := _common(best.tokens, prompt)) < self.min_tokens:
            return None
        try:
            tokens, state = _read(best.path, with_state=True)
        except (OSError, ValueError, KeyError, struct.error) as exc:
            log.warning("ignoring the saved prefix %s: %s", best.path.name, exc)
            self.discard(space, best.path)
            return None
        with contextlib.suppress(OSError):  # another process may have evicted it meanwhile
            os.utime(best.path)  # last use, for eviction
        return SavedPrefix(tokens=tokens, common=common, state=state)

    def covers(self, space: str, prompt: Sequence[int]) -> bool:
        """Whether a saved prefix already shares at least `min_tokens` with `prompt`."""
        with self._lock:
            return any(_common(entry.tokens, prompt) >= self.min_tokens for entry in self._entries(space))

    def save_later(self, space: str, tokens: Sequence[int], state: bytes) -> None:
        """Write the state in the background; never blocks the caller on the disk."""
        self._pending = [future for future in self._pending if not future.done()]
        self._pending.append(self._writer.submit(self._save, space, tuple(tokens), state))

    def flush(self) -> None:
        """Wait for the writes queued so far (tests, shutdown)."""
        for future in list(self._pending):
            future.result()

    def discard(self, space: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._lock:
            self._index[space] = [entry for entry in self._entries(space) if entry.path != path]

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def _entries(self, space: str) -> list[_Entry]:
        """The namespace's files, read once (headers and tokens only); caller holds the lock."""
        if space not in self._index:
            entries = []
            for path in sorted((self.directory / space).glob(f"*{SUFFIX}")):
                try:
                    entries.append(_Entry(path, _read(path, with_state=False)[0], path.stat().st_size))
                except (OSError, ValueError, KeyError, struct.error):
                    path.unlink(missing_ok=True)  # not a whole prefix file: never trusted
            self._index[space] = entries
        return self._index[space]

    def _save(self, space: str, tokens: tuple[int, ...], state: bytes) -> None:
        folder = self.directory / space
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(array.array('i', tokens).tobytes()).hexdigest()[:32]}{SUFFIX}"
        data = _encode(tokens, state)
        temporary = folder / f".{path.name}.{os.getpid()}.part"
        try:
            with temporary.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("could not save a prompt prefix (%d tokens): %s", len(tokens), exc)
            return
        with self._lock:
            entries = [entry for entry in self._entries(space) if entry.path != path]
            self._index[space] = [*entries, _Entry(path, tokens, len(data))]
        self._evict()

    def _evict(self) -> None:
        """Least recently used files go until the directory fits the budget (other processes may be
        writing and evicting in the same directory: a file gone meanwhile is simply skipped)."""
        files = []
        for path in self.directory.glob(f"*/*{SUFFIX}"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget_bytes:
                break
            total -= size
            self.discard(path.parent.name, path)
