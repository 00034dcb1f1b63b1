"""Prompt prefixes' KV state kept on the volume, so a new process skips re-reading a long prompt.

When a model has read a prompt of at least `min_tokens` that no saved prefix covers yet, the engine
hands this store a copy of that sequence's KV state; a background thread writes it under
`DIR/NAMESPACE/`, atomically (temporary name, then rename). A request in any later process whose
prompt starts with a saved prefix gets the state back before its turn and reads only the rest.

A namespace is everything that makes a state valid: the model file, the context options that shape
its KV cache, and the llama.cpp build. A file is trusted only if its checksum matches: a corrupt,
truncated or foreign file is removed, never loaded. The directory is kept under `budget_bytes`,
evicting the least recently used.

With a mirror (KV_CACHE_S3), every file written is also uploaded (in the background, after the local
write), and a namespace's remote files are listed once per process, the first time a prompt is looked
up in it (reading only each file's header and tokens). A prompt whose best prefix exists only remotely
gets that file downloaded to the volume first, under a temporary name, and checked like any local one:
a new instance with an empty volume starts with the prefixes other instances saved.
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
from typing import Protocol

import attrs

log = logging.getLogger(__name__)
MAGIC = b"GGUF-KV-PREFIX-1\n"
SUFFIX = ".kvprefix"
MAX_HEADER = 4096
HEAD_GUESS = 64 * 1024  # bytes read first from a remote file: its header and up to ~16k tokens


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


@attrs.frozen
class _Remote:
    name: str  # the file name, the same locally and remotely
    tokens: tuple[int, ...]


class PrefixMirror(Protocol):
    """A shared copy of the prefix files (KV_CACHE_S3). Blocking; any exception means "not available"."""

    def names(self, space: str) -> list[str]: ...

    def read_head(self, space: str, name: str, length: int) -> bytes: ...

    def fetch(self, space: str, name: str, destination: Path) -> None: ...

    def upload(self, space: str, path: Path) -> None: ...


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


def _header(data: bytes) -> tuple[dict[str, object], int]:
    """A file's header and where its tokens start; ValueError if `data` does not start like a prefix file."""
    if data[:len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
        raise ValueError("not a prefix file")
    (length,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if length > MAX_HEADER or len(data) < start + length:
        raise ValueError("not a prefix file")
    header = json.loads(data[start:start + length])
    if not isinstance(header, dict):
        raise ValueError("not a prefix file")
    return header, start + length


def _tokens(data: bytes) -> tuple[int, ...]:
    tokens = array.array("i")
    tokens.frombytes(data)
    return tuple(tokens)


def _read(path: Path, *, with_state: bool) -> tuple[tuple[int, ...], bytes]:
    """(tokens, state) of a file; ValueError if it is not a whole, intact prefix file."""
    with path.open("rb") as file:
        header, offset = _header(file.read(len(MAGIC) + 4 + MAX_HEADER))
        file.seek(offset)
        token_bytes = file.read(4 * int(header["tokens"]))  # type: ignore[call-overload]
        state = file.read(int(header["state"]) + 1) if with_state else b""  # type: ignore[call-overload]
    if with_state and (len(state) != header["state"]
                       or hashlib.sha256(token_bytes + state).hexdigest() != header["sha256"]):
        raise ValueError("truncated or corrupt")
    return _tokens(token_bytes), state


def _remote_tokens(mirror: PrefixMirror, space: str, name: str) -> tuple[int, ...]:
    """A remote file's tokens, read from its first bytes only (one more ranged read for very long prompts)."""
    data = mirror.read_head(space, name, HEAD_GUESS)
    header, offset = _header(data)
    end = offset + 4 * int(header["tokens"])  # type: ignore[call-overload]
    if len(data) < end:
        data = mirror.read_head(space, name, end)
    if len(data) < end:
        raise ValueError("truncated")
    return _tokens(data[offset:end])


class PrefixStore:
    def __init__(self, directory: Path, budget_bytes: int, min_tokens: int,
                 mirror: PrefixMirror | None = None) -> None:
        self.directory, self.budget_bytes, self.min_tokens = directory, budget_bytes, min_tokens
        self.mirror = mirror
        self._lock = threading.Lock()
        self._index: dict[str, list[_Entry]] = {}
        self._remote: dict[str, list[_Remote]] = {}  # files only the mirror has, by namespace
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kv-prefix-writer")
        self._pending: list[Future[None]] = []

    def find(self, space: str, prompt: Sequence[int]) -> SavedPrefix | None:
        """The saved prefix sharing the most leading tokens (at least `min_tokens`) with `prompt`
        (blocking: reads the file, and may list and download from the mirror)."""
        self._list_remote(space)
        with self._lock:
            entries = self._entries(space)
            best = max(entries, key=lambda entry: _common(entry.tokens, prompt), default=None)
            remote = max(self._remote.get(space, []), key=lambda entry: _common(entry.tokens, prompt), default=None)
        local_common = _common(best.tokens, prompt) if best is not None else 0
        if remote is not None and _common(remote.tokens, prompt) > max(local_common, self.min_tokens - 1):
            best = self._download(space, remote) or best
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
        """Whether a saved prefix (here, or on the mirror as far as it was listed) already shares at least
        `min_tokens` with `prompt` (never calls the mirror: the model's thread asks)."""
        with self._lock:
            known = [entry.tokens for entry in self._entries(space)]
            known += [entry.tokens for entry in self._remote.get(space, [])]
            return any(_common(tokens, prompt) >= self.min_tokens for tokens in known)

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
        if self.mirror is not None:
            try:
                self.mirror.upload(space, path)
            except Exception as exc:  # the local copy serves this volume either way
                log.warning("could not upload a prompt prefix to the shared cache: %s", exc)

    def _list_remote(self, space: str) -> None:
        """The mirror's files for `space` that this volume lacks, with their tokens (once per process)."""
        if self.mirror is None or space in self._remote:
            return
        remote: list[_Remote] = []
        try:
            with self._lock:
                local = {entry.path.name for entry in self._entries(space)}
            for name in self.mirror.names(space):
                if name in local:
                    continue
                try:
                    remote.append(_Remote(name, _remote_tokens(self.mirror, space, name)))
                except (ValueError, KeyError, struct.error) as exc:
                    log.warning("ignoring the shared prefix %s: %s", name, exc)
        except Exception as exc:
            log.warning("could not list the shared prompt prefixes: %s", exc)
        with self._lock:
            self._remote.setdefault(space, remote)

    def _download(self, space: str, remote: _Remote) -> _Entry | None:
        """Fetch a mirror file under a temporary name and check it whole before it takes its name."""
        with self._lock:
            self._remote[space] = [entry for entry in self._remote.get(space, []) if entry.name != remote.name]
        folder = self.directory / space
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / remote.name
        temporary = folder / f".{remote.name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            assert self.mirror is not None
            self.mirror.fetch(space, remote.name, temporary)
            tokens, _ = _read(temporary, with_state=True)
            if tokens != remote.tokens:
                raise ValueError("its tokens changed since it was listed")
            os.replace(temporary, path)
        except Exception as exc:
            temporary.unlink(missing_ok=True)
            log.warning("ignoring the shared prefix %s: %s", remote.name, exc)
            return None
        entry = _Entry(path, tokens, path.stat().st_size)
        with self._lock:
            self._index[space] = [*(item for item in self._entries(space) if item.path != path), entry]
        self._evict()
        return entry

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
