"""The process-wide model cache: one loaded instance per model name, loaded once however many ask.

Owned by the app (created and closed by its lifespan). Requests take a `Lease` on a model for as long
as they use it. The first lease on a cold model fetches the file (`fetch`: the store's job) and loads
it off the event loop; leases asked for meanwhile await that same load (single flight) and share its
result or its error, and carry its `ColdStart` timings. A failed load is not cached.
Memory: `max_loaded` bounds the loaded models (the least recently used idle one is evicted to make
room) and idle models are unloaded after their TTL; a model with a lease out is never evicted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Union

import attrs

from handler.engine.batching import BatchingChatModel
from handler.engine.embedding import EmbeddingModel
from handler.engine.llama_options import LlamaDefaults, engine_options
from handler.errors import Conflict, InvalidRequest, ModelLoadFailed, ServiceUnavailable
from handler.store.manifest import ModelKind, ModelSpec

log = logging.getLogger(__name__)
LoadedModel = Union[BatchingChatModel, EmbeddingModel]
Fetch = Callable[[ModelSpec], Awaitable[Path]]
Discard = Callable[[ModelSpec], Awaitable[None]]
ModelState = Literal["not_loaded", "loading", "ready", "failed"]
_WRONG_KIND = {"chat": "an embedding model; use /v1/embeddings", "embedding": "a chat model; use /v1/chat/completions"}


def load_model(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> LoadedModel:
    """Load `spec` from `path` (blocking: call it off the event loop)."""
    options = engine_options(defaults, spec.options)
    try:
        if spec.kind == "embedding":
            return EmbeddingModel(spec.name, path, options, spec.options.get("pooling"), defaults.queue)
        return BatchingChatModel(spec.name, path, options, spec.chat_format, defaults.queue)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadFailed(f"model '{spec.name}' failed to load from {path.name}: {exc}") from exc


async def _keep(_spec: ModelSpec) -> None:
    """No store to discard files in (tests of the cache alone)."""


@attrs.frozen
class ColdStart:
    """What a request waited for before its model could run."""

    sync_seconds: float
    load_seconds: float


@attrs.define
class CacheEntry:
    spec: ModelSpec
    model: LoadedModel
    cold_start: ColdStart
    last_used: float = attrs.field(factory=time.monotonic)
    in_use: int = 0


@attrs.define
class Lease:
    entry: CacheEntry
    cold_start: ColdStart | None  # set when this request waited for the load
    _released: bool = False

    @property
    def model(self) -> LoadedModel:
        return self.entry.model

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.entry.in_use -= 1
            self.entry.last_used = time.monotonic()


@attrs.frozen
class CacheLimits:
    max_loaded: int = 0  # 0: no limit
    default_ttl_s: float = 0  # 0: never unload for idleness


class ModelCache:
    def __init__(self, fetch: Fetch, defaults: LlamaDefaults, limits: CacheLimits = CacheLimits(),
                 discard: Discard | None = None) -> None:
        self.fetch, self.defaults, self.limits = fetch, defaults, limits
        self.discard = discard or _keep
        self._entries: dict[str, CacheEntry] = {}
        self._loading: dict[str, asyncio.Future[CacheEntry]] = {}
        self.failures: dict[str, str] = {}

    def is_loaded(self, name: str) -> bool:
        return name in self._entries

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def state(self, name: str) -> ModelState:
        if name in self._entries:
            return "ready"
        if name in self._loading:
            return "loading"
        return "failed" if name in self.failures else "not_loaded"

    async def lease(self, spec: ModelSpec, kind: ModelKind | None = None) -> Lease:
        if kind is not None and spec.kind != kind:
            raise InvalidRequest(f"'{spec.name}' is {_WRONG_KIND[kind]}", param="model", code=f"model_not_{kind}")
        entry, waited = self._entries.get(spec.name), False
        if entry is None:
            pending = self._loading.get(spec.name)
            if pending is None:
                pending = self._loading[spec.name] = asyncio.ensure_future(self._load(spec))
                pending.add_done_callback(lambda _: self._loading.pop(spec.name, None))
            entry, waited = await asyncio.shield(pending), True
        entry.in_use += 1
        entry.last_used = time.monotonic()
        return Lease(entry, entry.cold_start if waited else None)

    async def unload(self, name: str) -> bool:
        entry = self._entries.get(name)
        if entry is None:
            return False
        if entry.in_use:
            raise Conflict(f"model '{name}' has {entry.in_use} request(s) in flight", param="name")
        self._evict(entry)
        return True

    def unload_idle(self) -> list[str]:
        """Unload the models idle for longer than their TTL; returns their names."""
        now, gone = time.monotonic(), []
        for entry in list(self._entries.values()):
            ttl = entry.spec.ttl_s if entry.spec.ttl_s is not None else self.limits.default_ttl_s
            if ttl > 0 and entry.in_use == 0 and now - entry.last_used > ttl:
                self._evict(entry)
                gone.append(entry.spec.name)
        return gone

    async def close(self, timeout_s: float = 10) -> None:
        """Unload everything; waits for the models' threads, so every cut generation has said so."""
        entries = list(self._entries.values())
        for entry in entries:
            self._evict(entry)
        for entry in entries:
            await asyncio.to_thread(entry.model.join, timeout_s)

    def _evict(self, entry: CacheEntry) -> None:
        self._entries.pop(entry.spec.name, None)
        entry.model.close()
        log.info("unloaded model %s", entry.spec.name)

    def _make_room(self) -> None:
        limit = self.limits.max_loaded
        while limit and len(self._entries) >= limit:
            idle = [entry for entry in self._entries.values() if entry.in_use == 0]
            if not idle:
                raise ServiceUnavailable(f"all {limit} loaded models are busy; try again shortly",
                                         code="model_capacity", retry_after_s=5)
            self._evict(min(idle, key=lambda entry: entry.last_used))

    async def _load(self, spec: ModelSpec) -> CacheEntry:
        try:
            started = time.perf_counter()
            path = await self.fetch(spec)
            fetched = time.perf_counter()
            self._make_room()
            try:
                model = await asyncio.to_thread(load_model, spec, path, self.defaults)
            except ModelLoadFailed:
                await self.discard(spec)
                raise
            cold_start = ColdStart(sync_seconds=fetched - started, load_seconds=time.perf_counter() - fetched)
        except Exception as exc:
            self.failures[spec.name] = getattr(exc, "message", None) or str(exc)
            raise
        log.info("loaded model %s from %s in %.2fs", spec.name, path, cold_start.load_seconds)
        self.failures.pop(spec.name, None)
        entry = self._entries[spec.name] = CacheEntry(spec=spec, model=model, cold_start=cold_start)
        return entry
