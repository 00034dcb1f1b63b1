"""Prompt prefixes' KV state kept on the volume (and with KV_CACHE_S3 shared through S3), so a new
process skips re-reading a long prompt.

When a model has read a prompt of at least `min_tokens` that no saved prefix covers yet, the engine
hands this store a copy of that sequence's KV state; a background writer (a bounded queue: a state
that finds it full is dropped) writes it under `DIR/NAMESPACE/`, atomically (temporary name, then
rename). A request in any later process whose prompt starts with a saved prefix gets the state back
before its turn and reads only the rest.

Trust: a file is read into llama.cpp only if this deployment wrote it. Each carries an HMAC-SHA256,
under KV_CACHE_KEY (or a random key kept in `DIR/.key`), over its namespace, tokens and state; its
header's counts are checked against the namespace's bounds (tokens ≤ n_ctx, state ≤ what n_ctx tokens
of this model's KV take) before anything else is read, and the whole file before its state is used.
An unsigned, forged, foreign, oversized or damaged file is removed from the volume (ignored on S3)
and counted in `rejected`; it is never a cause of a request's failure.

A namespace is everything a state depends on (the model's content, the context options that shape
its KV cache, the llama.cpp build) and, with several API keys, the tenant: one key's prompts are never
reused for another's. The directory is kept under `budget_bytes` (temporary files counted), evicting
the least recently used. Look-ups, S3 listing and transfers run on the store's own threads; a
namespace's S3 listing happens once per process, single-flight.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import attrs

from handler.store.prefix_ram import RamTier, Rate, State, common_length

log = logging.getLogger(__name__)
MAGIC = b"GGUF-KV-PREFIX-3\n"
# The state is hashed in pieces of this size on several threads (hashlib releases the GIL), and the MAC
# signs their digests: a large model's state is hundreds of MB, and one SHA-256 pass over it took
# ~0.3 s of a restore's time to first token (1.6 GB/s here).
MAC_PIECE_BYTES = 8 << 20
_HASHERS = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="prefix-mac")
SUFFIX = ".kvprefix"
PART = ".part"
KEY_FILE = ".key"
MAX_HEADER = 256  # the header is a small flat JSON object: anything longer is not ours
HEAD_BYTES = len(MAGIC) + 4 + MAX_HEADER
PENDING_WRITES = 2  # states waiting to be written; more are dropped (the prompt is simply not saved)
LOOKUP_THREADS = 2
LOADED_STATES = 2  # states kept in memory after a read: the jobs of one request share one copy
STALE_PART_S = 3600  # a temporary file this old is a crashed writer's leftover


class RejectedFile(ValueError):
    """A prefix file that is not one this deployment wrote, or not within its namespace's bounds."""


@attrs.frozen
class PrefixSpace:
    """Where one model configuration's (and tenant's) prefixes live, and what a file there may hold."""

    name: str  # a hex digest: a folder on the volume and on S3
    max_tokens: int  # the context length
    max_state_bytes: int  # what the KV state of `max_tokens` tokens of this model can take

    def for_tenant(self, tenant: str) -> PrefixSpace:
        return self if not tenant else attrs.evolve(self, name=digest(self.name, tenant))

    @property
    def max_file_bytes(self) -> int:
        return HEAD_BYTES + 4 * self.max_tokens + self.max_state_bytes


@attrs.frozen
class SavedPrefix:
    tokens: tuple[int, ...]  # the saved prompt's tokens (the state holds exactly these)
    common: int  # how many leading tokens the asking prompt shares with them
    state: State
    space: str
    name: str  # its file name: to drop it when llama.cpp refuses it
    tier: str = "volume"  # where it came from: "ram", "volume" or "s3"


# Whether restoring a saved prefix pays: (tokens it saves reading, its state's bytes, predicted seconds
# to fetch it from its tier) → restore it? Each model answers from its own measured rates.
Worth = Callable[[int, int, float], bool]


@attrs.define
class _Entry:
    path: Path
    tokens: tuple[int, ...]


@attrs.frozen
class _Remote:
    name: str  # the file name, the same locally and remotely
    tokens: tuple[int, ...]


class PrefixMirror(Protocol):
    """A shared copy of the prefix files (KV_CACHE_S3). Blocking; any exception means "not available"."""

    def names(self, space: str, max_bytes: int) -> list[str]: ...

    def read_head(self, space: str, name: str, length: int) -> bytes: ...

    def fetch(self, space: str, name: str, destination: Path, max_bytes: int) -> None: ...

    def upload(self, space: str, path: Path) -> None: ...

    def drop_connections(self) -> bool: ...


def digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def load_key(directory: Path, configured: str | None) -> bytes:
    """The signing key: KV_CACHE_KEY when set, else a random one created once in `directory/.key`
    (readable by whoever can read the volume: set KV_CACHE_KEY where others can write it)."""
    if configured:
        return configured.encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KEY_FILE
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable key (remove it to make a new one)")
    return key.encode()


class _Codec:
    """The file format: MAGIC, a u32 header length, a JSON header {tokens, state, mac}, the tokens
    (int32), the state. The MAC covers the namespace, both lengths, the tokens and the state (through
    the SHA-256 of each `MAC_PIECE_BYTES` piece of it, in order)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, space: str, token_bytes: bytes, state: State) -> str:
        signer = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (MAGIC, space.encode(), struct.pack("<QQ", len(token_bytes), len(state)), token_bytes,
                     *_piece_digests(state)):
            signer.update(part)
        return signer.hexdigest()

    def encode(self, space: str, tokens: Sequence[int], state: State) -> bytes:
        token_bytes = array.array("i", tokens).tobytes()
        header = json.dumps({"tokens": len(tokens), "state": len(state),
                             "mac": self.mac(space, token_bytes, state)}).encode()
        return MAGIC + struct.pack("<I", len(header)) + header + token_bytes + state

    @staticmethod
    def header(data: bytes, space: PrefixSpace) -> tuple[int, int, str, int]:
        """(tokens, state bytes, mac, where the tokens start) of a file starting with `data`, checked
        against the namespace's bounds; RejectedFile otherwise."""
        start = len(MAGIC) + 4
        if data[:len(MAGIC)] != MAGIC or len(data) < start:
            raise RejectedFile("not a prefix file")
        (length,) = struct.unpack("<I", data[len(MAGIC):start])
        if length > MAX_HEADER or len(data) < start + length:
            raise RejectedFile("not a prefix file")
        try:
            header = json.loads(data[start:start + length])
        except (ValueError, RecursionError):
            raise RejectedFile("not a prefix file") from None
        if not isinstance(header, dict) or set(header) != {"tokens", "state", "mac"}:
            raise RejectedFile("not a prefix file")
        tokens, state, mac = header["tokens"], header["state"], header["mac"]
        if not (type(tokens) is int and type(state) is int and isinstance(mac, str) and len(mac) == 64):
            raise RejectedFile("not a prefix file")
        if not (0 < tokens <= space.max_tokens and 0 < state <= space.max_state_bytes):
            raise RejectedFile(f"outside this model's bounds ({tokens} tokens, {state} bytes of state)")
        return tokens, state, mac, start + length

    def read(self, path: Path, space: PrefixSpace, *, with_state: bool) -> tuple[tuple[int, ...], bytes]:
        """(tokens, state) of a file; RejectedFile unless it is whole, within bounds and (with its state)
        signed by this deployment for this namespace."""
        with path.open("rb") as file:
            tokens, state_size, mac, offset = self.header(file.read(HEAD_BYTES), space)
            if os.fstat(file.fileno()).st_size != offset + 4 * tokens + state_size:
                raise RejectedFile("truncated, or longer than its header says")
            file.seek(offset)
            token_bytes = file.read(4 * tokens)
            state = file.read(state_size) if with_state else b""
        if with_state and not hmac.compare_digest(self.mac(space.name, token_bytes, state), mac):
            raise RejectedFile("not signed by this deployment's key")
        return _tokens(token_bytes), state


def _piece_digests(state: State) -> list[bytes]:
    """The SHA-256 of each piece of `state`, in order, hashed side by side when there are several."""
    view = memoryview(state)
    pieces = [view[start:start + MAC_PIECE_BYTES] for start in range(0, len(state), MAC_PIECE_BYTES)]
    if len(pieces) < 2:
        return [hashlib.sha256(piece).digest() for piece in pieces]
    return list(_HASHERS.map(lambda piece: hashlib.sha256(piece).digest(), pieces))


def _tokens(data: bytes) -> tuple[int, ...]:
    tokens = array.array("i")
    tokens.frombytes(data)
    return tuple(tokens)


class PrefixStore:
    def __init__(self, directory: Path, budget_bytes: int, min_tokens: int, key: bytes,
                 mirror: PrefixMirror | None = None, ram_bytes: int = 0) -> None:
        self.directory, self.budget_bytes, self.min_tokens = directory, budget_bytes, min_tokens
        self.mirror = mirror
        self.ram = RamTier(ram_bytes)
        self.read_rates = {"volume": Rate(), "s3": Rate()}  # bytes a second, measured on each read
        self.rejected: collections.Counter[str] = collections.Counter()  # files refused, by where they were
        self._codec = _Codec(key)
        self._lock = threading.Lock()
        self._index: dict[str, list[_Entry]] = {}
        self._remote: dict[str, list[_Remote]] = {}  # files only the mirror has, by namespace
        self._listing: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._refused_remote: set[tuple[str, str]] = set()  # never fetched again by this process
        self._loaded: collections.OrderedDict[Path, tuple[tuple[int, int], tuple[int, ...], bytes]] = (
            collections.OrderedDict())
        self._pending: list[tuple[str, tuple[int, ...]]] = []  # states waiting to be written
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kv-prefix-writer")
        self._lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="kv-prefix-lookup")
        self._clean_leftovers()

    @property
    def max_state_bytes(self) -> int:
        """No state larger than a quarter of the budget is copied out of a model."""
        return self.budget_bytes // 4

    async def find(self, space: PrefixSpace, prompt: Sequence[int], worth: Worth | None = None) -> SavedPrefix | None:
        """The saved prefix sharing the most leading tokens (at least `min_tokens`) with `prompt`, read
        and checked on the store's own threads: from memory, the volume or the mirror, whichever shares
        the most (memory first when they tie), and only where `worth` says restoring it pays."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lookups, self.find_blocking, space, tuple(prompt), worth)

    def find_blocking(self, space: PrefixSpace, prompt: Sequence[int], worth: Worth | None = None
                      ) -> SavedPrefix | None:
        worth = worth or (lambda _common, _size, _fetch: True)
        in_ram = self.ram.best(space.name, prompt)
        ram_common = in_ram.common if in_ram is not None and in_ram.common >= self.min_tokens else 0
        saved = self._find_file(space, prompt, worth, beyond=ram_common)
        if saved is None and in_ram is not None and ram_common and worth(ram_common, len(in_ram.state), 0.0):
            saved = SavedPrefix(tokens=in_ram.tokens, common=ram_common, state=in_ram.state, space=space.name,
                                name="", tier="ram")
        return saved

    def _find_file(self, space: PrefixSpace, prompt: Sequence[int], worth: Worth, beyond: int) -> SavedPrefix | None:
        """The file (here or on the mirror) sharing more than `beyond` tokens with `prompt`, if reading it
        pays; it then stays in memory too."""
        self._list_remote(space)
        with self._lock:
            local = max(self._entries(space), key=lambda entry: common_length(entry.tokens, prompt), default=None)
            remote = max(self._remote.get(space.name, []), key=lambda entry: common_length(entry.tokens, prompt),
                         default=None)
        local_common = common_length(local.tokens, prompt) if local is not None else 0
        best, tier = local, "volume"
        remote_common = common_length(remote.tokens, prompt) if remote is not None else 0
        if remote is not None and remote_common > max(local_common, beyond, self.min_tokens - 1) \
                and self._pays(worth, remote_common, len(remote.tokens) * space.max_state_bytes // space.max_tokens,
                               "s3"):
            downloaded = self._download(space, remote)
            best, tier = (downloaded, "s3") if downloaded is not None else (local, "volume")
        if best is None or (common := common_length(best.tokens, prompt)) < max(self.min_tokens, beyond + 1):
            return None
        if tier == "volume" and not self._pays(worth, common, _size(best.path), "volume"):
            return None
        loaded = self._load(space, best.path)
        if loaded is None:
            return None
        tokens, state = loaded
        with contextlib.suppress(OSError):  # another process may have evicted it meanwhile
            os.utime(best.path)  # last use, for eviction
        self.ram.put(space.name, tokens, state)
        return SavedPrefix(tokens=tokens, common=common, state=state, space=space.name, name=best.path.name,
                           tier=tier)

    def _pays(self, worth: Worth, common: int, size: int, tier: str) -> bool:
        """Whether `worth` says restoring `size` bytes from `tier` beats reading `common` tokens (with the
        tier's read not measured yet, the read is counted as free: the first one measures it)."""
        fetch = self.read_rates[tier].seconds_for(size)
        if tier == "s3":
            fetch = (fetch or 0.0) + (self.read_rates["volume"].seconds_for(size) or 0.0)
        return worth(common, size, fetch or 0.0)

    def keep(self, space: PrefixSpace, tokens: Sequence[int], state: State) -> bool:
        """Keep a state in memory only (a conversation leaving its slot)."""
        return len(state) <= space.max_state_bytes and self.ram.put(space.name, tokens, state)

    def covers(self, space: PrefixSpace, prompt: Sequence[int]) -> bool:
        """Whether a saved prefix (here, being written, or on the mirror as far as it was listed) already
        shares at least `min_tokens` with `prompt` (never reads a file: the model's thread asks)."""
        with self._lock:
            known = [entry.tokens for entry in self._index.get(space.name, [])]
            known += [entry.tokens for entry in self._remote.get(space.name, [])]
            known += [tokens for name, tokens in self._pending if name == space.name]
        known += self.ram.known(space.name)
        return any(common_length(tokens, prompt) >= self.min_tokens for tokens in known)

    def save_later(self, space: PrefixSpace, tokens: Sequence[int], state: State) -> bool:
        """Queue the state for writing; False (dropped) when the writer is busy or the state too large.
        Never blocks the caller on the disk."""
        if len(state) > min(self.max_state_bytes, space.max_state_bytes):
            return False
        self.ram.put(space.name, tokens, state)
        job = (space.name, tuple(tokens))
        with self._lock:
            if len(self._pending) >= PENDING_WRITES:
                return False
            self._pending.append(job)
        future = self._writer.submit(self._save, space, job[1], state)
        future.add_done_callback(lambda _: self._done_writing(job))
        return True

    def reject(self, saved: SavedPrefix, why: str) -> None:
        """llama.cpp refused a state this store handed out: the file (and its copy in memory) goes."""
        log.warning("dropping the saved prefix %s: %s", saved.name or "kept in memory", why)
        self.rejected["refused"] += 1
        self.ram.drop(saved.space, saved.tokens)
        if saved.name:
            self.discard(saved.space, self.directory / saved.space / saved.name)

    def flush(self) -> None:
        """Wait for the writes queued so far (tests, shutdown)."""
        self._writer.submit(lambda: None).result()

    def discard(self, space: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._lock:
            self._loaded.pop(path, None)
            if space in self._index:
                self._index[space] = [entry for entry in self._index[space] if entry.path != path]

    def drop_connections(self) -> bool:
        """Close the mirror's connections (before a process snapshot); the next use opens new ones."""
        return self.mirror is not None and self.mirror.drop_connections()

    def close(self) -> None:
        self._lookups.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)

    # ---- files
    def _done_writing(self, job: tuple[str, tuple[int, ...]]) -> None:
        with self._lock:
            self._pending.remove(job)

    def _refuse(self, space: str, path: Path, where: str, exc: Exception) -> None:
        log.warning("ignoring the saved prefix %s: %s", path.name, exc)
        self.rejected[where] += 1
        self.discard(space, path)

    def _load(self, space: PrefixSpace, path: Path) -> tuple[tuple[int, ...], bytes] | None:
        """A file's tokens and verified state; one copy in memory for every job that asks meanwhile."""
        try:
            stat = path.stat()
            version = (stat.st_ino, stat.st_size)  # files are only ever replaced whole (a new inode)
            with self._lock:
                cached = self._loaded.get(path)
                if cached is not None and cached[0] == version:
                    self._loaded.move_to_end(path)
                    return cached[1], cached[2]
            started = time.perf_counter()
            tokens, state = self._codec.read(path, space, with_state=True)
            self.read_rates["volume"].record(stat.st_size, time.perf_counter() - started)
        except FileNotFoundError:
            self.discard(space.name, path)
            return None
        except (OSError, RejectedFile) as exc:
            self._refuse(space.name, path, "volume", exc)
            return None
        with self._lock:
            self._loaded[path] = (version, tokens, state)
            while len(self._loaded) > LOADED_STATES:
                self._loaded.popitem(last=False)
        return tokens, state

    def _entries(self, space: PrefixSpace) -> list[_Entry]:
        """The namespace's files, read once (headers and tokens only); caller holds the lock."""
        if space.name not in self._index:
            entries = []
            for path in sorted((self.directory / space.name).glob(f"*{SUFFIX}")):
                try:
                    entries.append(_Entry(path, self._codec.read(path, space, with_state=False)[0]))
                except (OSError, RejectedFile) as exc:
                    log.warning("removing the saved prefix %s: %s", path.name, exc)
                    self.rejected["volume"] += 1
                    path.unlink(missing_ok=True)
            self._index[space.name] = entries
        return self._index[space.name]

    def _save(self, space: PrefixSpace, tokens: tuple[int, ...], state: State) -> None:
        folder = self.directory / space.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest(*tokens)}{SUFFIX}"
        temporary = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}{PART}"
        try:
            with temporary.open("wb") as file:
                file.write(self._codec.encode(space.name, tokens, state))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("could not save a prompt prefix (%d tokens): %s", len(tokens), exc)
            return
        with self._lock:
            entries = [entry for entry in self._entries(space) if entry.path != path]
            self._index[space.name] = [*entries, _Entry(path, tokens)]
        self._evict()
        if self.mirror is not None:
            try:
                self.mirror.upload(space.name, path)
            except Exception as exc:  # the local copy serves this volume either way
                log.warning("could not upload a prompt prefix to the shared cache: %s", exc)

    def _clean_leftovers(self) -> None:
        """Temporary files of writers that crashed: removed once they are old enough to be nobody's."""
        cutoff = time.time() - STALE_PART_S
        for path in self.directory.glob(f"*/.*{PART}"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def _evict(self) -> None:
        """Least recently used files go until the directory fits the budget, temporary files counted
        (other processes may be writing and evicting in the same directory: a file gone meanwhile is
        simply skipped)."""
        files, total = [], 0
        for path in self.directory.glob("*/*"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                total += stat.st_size
                if path.name.endswith(SUFFIX) and not path.name.startswith("."):
                    files.append((stat.st_mtime, stat.st_size, path))
        for _, size, path in sorted(files):
            if total <= self.budget_bytes:
                break
            total -= size
            self.discard(path.parent.name, path)

    # ---- the mirror
    def _list_remote(self, space: PrefixSpace) -> None:
        """The mirror's files for `space` that this volume lacks, with their tokens (once per process,
        one listing at a time per namespace)."""
        if self.mirror is None or space.name in self._remote:
            return
        with self._listing[space.name]:
            if space.name in self._remote:
                return
            remote = self._read_listing(self.mirror, space)
            with self._lock:
                self._remote[space.name] = remote

    def _read_listing(self, mirror: PrefixMirror, space: PrefixSpace) -> list[_Remote]:
        remote: list[_Remote] = []
        try:
            with self._lock:
                local = {entry.path.name for entry in self._entries(space)}
            for name in mirror.names(space.name, space.max_file_bytes):
                if name in local:
                    continue
                try:
                    remote.append(_Remote(name, self._remote_tokens(mirror, space, name)))
                except RejectedFile as exc:
                    log.warning("ignoring the shared prefix %s: %s", name, exc)
                    self.rejected["s3"] += 1
                    self._refused_remote.add((space.name, name))
        except Exception as exc:
            log.warning("could not list the shared prompt prefixes: %s", exc)
        return remote

    def _remote_tokens(self, mirror: PrefixMirror, space: PrefixSpace, name: str) -> tuple[int, ...]:
        """A remote file's tokens, from its header and token bytes only (two ranged reads)."""
        tokens, _, _, offset = self._codec.header(mirror.read_head(space.name, name, HEAD_BYTES), space)
        data = mirror.read_head(space.name, name, offset + 4 * tokens)
        if len(data) < offset + 4 * tokens:
            raise RejectedFile("truncated")
        return _tokens(data[offset:offset + 4 * tokens])

    def _download(self, space: PrefixSpace, remote: _Remote) -> _Entry | None:
        """Fetch a mirror file (at most the namespace's largest file) under a temporary name, and check
        it whole, signature included, before it takes its name."""
        with self._lock:
            self._remote[space.name] = [entry for entry in self._remote.get(space.name, [])
                                        if entry.name != remote.name]
        if (space.name, remote.name) in self._refused_remote:
            return None
        folder = self.directory / space.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / remote.name
        temporary = folder / f".{remote.name}.{os.getpid()}.{threading.get_ident()}{PART}"
        try:
            assert self.mirror is not None
            started = time.perf_counter()
            self.mirror.fetch(space.name, remote.name, temporary, space.max_file_bytes)
            self.read_rates["s3"].record(temporary.stat().st_size, time.perf_counter() - started)
            tokens, _ = self._codec.read(temporary, space, with_state=True)
            if tokens != remote.tokens:
                raise RejectedFile("its tokens changed since it was listed")
            os.replace(temporary, path)
        except Exception as exc:
            temporary.unlink(missing_ok=True)
            log.warning("ignoring the shared prefix %s: %s", remote.name, exc)
            if isinstance(exc, RejectedFile):
                self.rejected["s3"] += 1
                self._refused_remote.add((space.name, remote.name))
            return None
        entry = _Entry(path, tokens)
        with self._lock:
            self._index[space.name] = [*(item for item in self._entries(space) if item.path != path), entry]
        self._evict()
        return entry
