"""Making a model's GGUF present and verified on the local volume before it loads.

`ModelStore.ensure_local(spec)` is lazy (nothing moves until a model is asked for) and single-flight
twice over: concurrent requests in one process share one task, and worker processes share one
download through a file lock in MODEL_DIR (the second worker waits, then finds the file published).
`prefetch(spec)` is the one exception: the process's start syncs its warm set's first model before the
event loop runs, and the first `ensure_local` of that model joins it.
A file already on the volume is used without touching S3 when the manifest's sha256 matches the
recorded one (or TRUST_LOCAL_MODELS is set); otherwise one HEAD compares its ETag.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs

from handler.errors import Conflict, InsufficientStorage, ModelSourceError, ServiceUnavailable
from handler.store import s3
from handler.store.catalog import ModelCatalog
from handler.store.files import (
    LOCK_WAIT_S,
    RecordBook,
    exclusive_lock,
    has_gguf_header,
    publish,
    remove_leftovers,
    sha256_of,
    temporary_beside,
)
from handler.store.manifest import ModelSpec
from handler.store.progress import SyncProgress
from handler.store.staging import MemoryStaging, StagedFile, available_memory_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


@attrs.frozen
class StoreConfig:
    tuning: s3.S3Tuning = s3.S3Tuning()
    trust_local: bool = False
    headroom_bytes: int = 64 * 1024 * 1024  # kept free beyond the model itself
    staging: str = "volume"  # "memory": remote files are streamed into memory, loaded, released


STORE_THREADS = 4  # blocking store work at once (S3 syncs, lock waits, hashing); the rest queue behind


class ModelStore:
    def __init__(self, catalog: ModelCatalog, config: StoreConfig = StoreConfig()) -> None:
        self.catalog, self.config = catalog, config
        self.progress: dict[str, SyncProgress] = {}  # by file name
        self._inflight: dict[Path, asyncio.Future[Path]] = {}
        self._prefetched: dict[Path, Future[Path]] = {}  # started before the event loop; joined once
        self._client: Any = None
        self._records = RecordBook()
        self._staging = MemoryStaging()
        # Its own threads: a burst of cold syncs (each blocked for minutes on S3 or a lock) must not
        # take the default pool that tokenising, grammar building and loading for ready models use.
        self._executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="model-store")
        self._downloads_stopped = threading.Event()  # transfers under way stop at their next bytes

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking store work on the store's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def drop_connections(self) -> bool:
        """Close the S3 client's connections (before a process snapshot); the next sync opens new ones."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        return client is not None

    def stop_downloads(self) -> None:
        """Downloads under way end at their next bytes and leave nothing behind; later ones end at their
        first (the server is stopping: a large model's download would hold it for minutes, past the
        platform's grace period, since the process exits only once the store's threads have)."""
        self._downloads_stopped.set()

    def close(self) -> None:
        self.stop_downloads()
        self._staging.release_all()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def clean_leftovers(self) -> list[Path]:
        return remove_leftovers(self.catalog.model_dir) if self.catalog.model_dir.is_dir() else []

    def is_syncing(self, path: Path) -> bool:
        return path in self._inflight

    def progress_of(self, spec: ModelSpec) -> SyncProgress | None:
        return self.progress.get(self.catalog.path_of(spec).name)

    def connect(self) -> None:
        """Make the S3 client now (importing boto3 and reading its service model: ~0.35 s of Python here)."""
        self._s3()

    def prefetch(self, spec: ModelSpec) -> Future[Path]:
        """Start making `spec` local now, on the store's threads, without an event loop (the process is
        still starting); the first `ensure_local(spec)` waits for this sync instead of starting another."""
        path = self.catalog.path_of(spec)
        future = self._prefetched[path] = self._executor.submit(self._ensure_blocking, spec, path)
        return future

    async def ensure_local(self, spec: ModelSpec) -> Path:
        path = self.catalog.path_of(spec)
        pending = self._inflight.get(path)
        if pending is None:
            prefetched = self._prefetched.pop(path, None)
            pending = asyncio.wrap_future(prefetched) if prefetched is not None else \
                asyncio.ensure_future(self.run_blocking(self._ensure_blocking, spec, path))
            self._inflight[path] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(path, None))
        return await asyncio.shield(pending)

    def _ensure_blocking(self, spec: ModelSpec, path: Path) -> Path:
        progress = self.progress[path.name] = SyncProgress(file=path.name, state="checking")
        try:
            if not spec.is_remote:
                self._check_local(spec, path)
            elif self.config.staging == "memory":
                path = self._stage_in_memory(spec, progress)
            elif not self._is_current(spec, path):
                path.parent.mkdir(parents=True, exist_ok=True)
                with exclusive_lock(path, stop=self._downloads_stopped, wait_s=LOCK_WAIT_S,  # another process
                                    on_wait=functools.partial(setattr, progress, "state", "waiting")) as taken:
                    if not taken:
                        raise self._lock_not_taken(spec, path)
                    progress.state = "checking"
                    if not self._is_current(spec, path) and not self._adopt_legacy_copy(spec, path):
                        self._download(spec, path, progress)
        except Exception as exc:
            progress.finish("failed", str(exc))
            raise
        progress.finish("ready")
        return path

    def _lock_not_taken(self, spec: ModelSpec, path: Path) -> ServiceUnavailable:
        if self._downloads_stopped.is_set():
            return _stopped(f"model '{spec.name}': its sync was stopped while it waited for another process's download")
        return ServiceUnavailable(f"model '{spec.name}': another process has been downloading {path.name} for "
                                  f"over {LOCK_WAIT_S / 60:.0f} minutes", code="model_source_unavailable",
                                  retry_after_s=s3.RETRY_AFTER_S)

    async def discard_if_corrupt(self, spec: ModelSpec) -> bool:
        """After llama.cpp failed to load `spec`: remove its synced copy only if the file itself is
        suspect (not a GGUF header, or no longer what was verified), so the next request syncs it
        afresh. A verified file that failed for another reason (an option, memory, an architecture
        this build does not know) stays: downloading it again would not help, and other entries may
        share it. Local files are the operator's and always stay."""
        return await self.run_blocking(self._discard_if_corrupt, spec)

    def _discard_if_corrupt(self, spec: ModelSpec) -> bool:
        path = self.catalog.path_of(spec)
        if not spec.is_remote or (has_gguf_header(path) and self._records.read(path) is not None):
            return False
        self.delete_file(path)
        log.warning("removed %s: it is not a valid GGUF file; the next request syncs it again", path.name)
        return True

    def _check_local(self, spec: ModelSpec, path: Path) -> None:
        if not path.is_file():
            raise ServiceUnavailable(f"model '{spec.name}': its file {path.name} is missing from the model directory",
                                     code="model_file_missing")
        if spec.sha256 and self._recorded_sha256(path) != spec.sha256:
            raise ModelSourceError(f"model '{spec.name}': {path.name} does not match the manifest's sha256",
                                   code="checksum_mismatch")

    def _recorded_sha256(self, path: Path) -> str:
        record = self._records.read(path)
        return record.sha256 if record else self._records.write(path, sha256=sha256_of(path)).sha256

    def _adopt_legacy_copy(self, spec: ModelSpec, path: Path) -> bool:
        """A volume filled by an earlier version keeps the object under its bare file name: when that
        copy is verifiably this object, link it under the new name instead of downloading again."""
        legacy = self.catalog.legacy_path_of(spec)
        if not legacy.is_file() or not self._is_current(spec, legacy, trust_local=False):  # evidence, not trust
            return False
        record = self._records.read(legacy)  # there is one: `_is_current` found or wrote it
        if record is None:
            return False
        try:
            os.link(legacy, path)
        except OSError:
            return False
        self._records.write(path, sha256=record.sha256, etag=record.etag, version_id=record.version_id)
        log.info("using %s, synced by an earlier version, as %s", legacy.name, path.name)
        return True

    async def delete_synced_copy(self, spec: ModelSpec) -> bool:
        """Remove `spec`'s synced file (never a local one, never one being synced); True if it was there."""
        path = self.catalog.path_of(spec)
        if not spec.is_remote:
            raise Conflict(f"'{spec.name}' is a local file, not a synced copy; remove it by hand", param="name")
        if self.is_syncing(path):
            raise Conflict(f"{path.name} is being synced; try again when it is done", param="name")
        return await self.run_blocking(self.delete_file, path)

    def delete_file(self, path: Path) -> bool:
        """Remove a synced file and its record; True if it was there."""
        existed = path.is_file()
        path.unlink(missing_ok=True)
        self._records.forget(path)
        return existed

    def _is_current(self, spec: ModelSpec, path: Path, *, trust_local: bool | None = None) -> bool:
        """Whether the local copy is the manifest's object, asking S3 only when the manifest cannot tell."""
        if not path.is_file() or (spec.size is not None and path.stat().st_size != spec.size):
            return False
        if spec.sha256:
            return self._recorded_sha256(path) == spec.sha256
        if self.config.trust_local if trust_local is None else trust_local:
            return True
        record = self._records.read(path)
        head = s3.head_object(self._s3(), s3.S3Location.parse(spec.source), spec.version_id)
        return record is not None and record.etag == head.etag and record.size == head.size

    def _head(self, spec: ModelSpec, where: s3.S3Location) -> s3.ObjectInfo:
        head = s3.head_object(self._s3(), where, spec.version_id)
        if spec.size is not None and head.size != spec.size:
            raise ModelSourceError(f"{where} is {head.size} bytes, the manifest says {spec.size}", code="size_mismatch")
        return head

    def _fetch(self, spec: ModelSpec, where: s3.S3Location, head: s3.ObjectInfo, handle: IO[bytes],
               progress: SyncProgress) -> str:
        """Stream the object into `handle` (parallel ranged GETs) and check it; returns its sha256."""
        progress.state, progress.total = "downloading", head.size
        written, sha256 = s3.download(self._s3(), where, handle, self.config.tuning,
                                      version_id=head.version_id if spec.version_id else None,
                                      on_bytes=functools.partial(self._received, where, progress))
        progress.state = "verifying"
        if written != head.size:
            raise ServiceUnavailable(f"{where}: got {written} of {head.size} bytes", code="model_source_unavailable",
                                     retry_after_s=s3.RETRY_AFTER_S)
        if spec.sha256 and sha256 != spec.sha256:
            raise ModelSourceError(f"{where} does not match the manifest's sha256 (got {sha256}); "
                                   "the download was discarded", code="checksum_mismatch")
        return sha256

    def _received(self, where: s3.S3Location, progress: SyncProgress, count: int) -> None:
        """Bytes arrived (on the transfer's threads); raising ends the transfer, and its file goes."""
        if self._downloads_stopped.is_set():
            raise _stopped(f"{where}: the download was stopped")
        progress.add_bytes(count)

    def _download(self, spec: ModelSpec, path: Path, progress: SyncProgress) -> None:
        where = s3.S3Location.parse(spec.source)
        head = self._head(spec, where)
        self._check_space(spec, path, head.size)
        log.info("syncing %s (%d bytes) from %s", path.name, head.size, where)
        with temporary_beside(path) as (temporary, handle):
            sha256 = self._fetch(spec, where, head, handle, progress)
            publish(temporary, handle, path)
        self._records.write(path, sha256=sha256, etag=head.etag, version_id=head.version_id)
        log.info("synced %s in %.2fs (%.1f MB/s)", path.name, progress.seconds, progress.rate / 1e6)

    def _stage_in_memory(self, spec: ModelSpec, progress: SyncProgress) -> Path:
        """The object streamed into an in-memory file (kept until its model loaded: `release_staged`)."""
        if (staged := self._staging.get(spec.name)) is not None:
            return staged.path
        where = s3.S3Location.parse(spec.source)
        head = self._head(spec, where)
        needed, available = head.size + self.config.headroom_bytes, available_memory_bytes()
        if available < needed:
            raise InsufficientStorage(f"not enough memory to stage model '{spec.name}' (MODEL_STAGING=memory): "
                                      f"{needed} bytes needed, {available} available")
        log.info("staging %s (%d bytes) from %s in memory", spec.name, head.size, where)
        fd = self._staging.new_file(spec.name)
        try:
            with os.fdopen(os.dup(fd), "wb") as handle:
                sha256 = self._fetch(spec, where, head, handle, progress)
        except BaseException:
            os.close(fd)
            raise
        staged = StagedFile(fd, sha256, head.size)
        self._staging.keep(spec.name, staged)
        log.info("staged %s in %.2fs (%.1f MB/s)", spec.name, progress.seconds, progress.rate / 1e6)
        return staged.path

    def release_staged(self, spec: ModelSpec) -> None:
        """Its model has loaded (or failed to): the staged file's memory goes back (mapped pages stay
        with the mapping)."""
        self._staging.release(spec.name)

    def _check_space(self, spec: ModelSpec, path: Path, size: int) -> None:
        needed = size + self.config.headroom_bytes
        free = shutil.disk_usage(path.parent).free
        if free < needed:
            raise InsufficientStorage(f"not enough disk space for model '{spec.name}': {needed} bytes needed "
                                      f"({size} for the file), {free} free in the model directory")

    def _s3(self) -> Any:
        if self._client is None:  # created on first need: a store of local files never builds one
            self._client = s3.make_client(self.config.tuning)
        return self._client


def _stopped(what: str) -> ServiceUnavailable:
    """The drain's 503 for a sync that `stop_downloads` ended."""
    return ServiceUnavailable(f"{what}: the server is shutting down", code="draining", retry_after_s=1)
