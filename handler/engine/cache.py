"""The process-wide model cache: one loaded instance per model name, loaded once however many ask.

Owned by the app (created and closed by its lifespan). Requests take a `Lease` on a model for as long
as they use it. The first lease on a cold model fetches the file (`fetch`: the store's job) and loads
it off the event loop; leases asked for meanwhile await that same load (single flight) and share its
result or its error, and carry its `ColdStart` timings. A failed load is not cached.
Memory: `max_loaded` bounds how many models are loaded and `memory_budget` what they may take
together, in host memory and in GPU memory apart (each model's cost estimated before it loads, then
measured from the buffers llama.cpp allocates on each). With any limit, loads are
admitted one at a time, counted before they start, and make room by evicting the least recently used
idle models; what cannot fit is a 503 `model_capacity` (busy models are never evicted, nor models whose
load has just finished for requests still waiting on it). Idle models are unloaded after their TTL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import attrs

from handler.engine.batching import BatchingChatModel
from handler.engine.embedding import EmbeddingModel
from handler.engine.llama_options import LlamaDefaults
from handler.engine.loading import Loaded, LoadedModel, estimate_model_bytes, load_model
from handler.engine.types import Footprint
from handler.errors import Conflict, ModelLoadFailed, ModelTooLarge, ServiceUnavailable
from handler.store.manifest import ModelSpec

log = logging.getLogger(__name__)
Fetch = Callable[[ModelSpec], Awaitable[Path]]
Loader = Callable[[ModelSpec, Path, LlamaDefaults], Loaded]  # blocking; `load_model` unless a test fakes it
Discard = Callable[[ModelSpec], Awaitable[bool]]  # removes a corrupt synced file; True if it did
ModelState = Literal["not_loaded", "loading", "ready", "failed"]
MIB = 1024 * 1024
EVICTION_WAIT_S = 60  # an evicted model's thread ends after its current step, then frees its context


def _fits(used: Footprint, budget: Footprint) -> bool:
    """Within the budget on both sides (a side budgeted 0 has no budget)."""
    return (not budget.host or used.host <= budget.host) and (not budget.device or used.device <= budget.device)


async def _keep(_spec: ModelSpec) -> bool:
    """No store to discard files in (tests of the cache alone)."""
    return False


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
    memory: Footprint  # measured: what llama.cpp allocated for it
    estimate: Footprint | None = None  # what was expected before it loaded (with a memory budget)
    last_used: float = attrs.field(factory=time.monotonic)
    in_use: int = 0


@attrs.define
class Lease:
    entry: CacheEntry
    cold_start: ColdStart | None  # set when this request waited for the load
    _released: bool = False

    @property
    def chat_model(self) -> BatchingChatModel:
        """The model, leased as a chat model (the route checked the spec's kind)."""
        if not isinstance(self.entry.model, BatchingChatModel):
            raise TypeError(f"model '{self.entry.spec.name}' is not a chat model")
        return self.entry.model

    @property
    def embedding_model(self) -> EmbeddingModel:
        """The model, leased as an embedding model (the route checked the spec's kind)."""
        if not isinstance(self.entry.model, EmbeddingModel):
            raise TypeError(f"model '{self.entry.spec.name}' is not an embedding model")
        return self.entry.model

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.entry.in_use -= 1
            self.entry.last_used = time.monotonic()


@attrs.frozen
class CacheLimits:
    max_loaded: int = 0  # 0: no limit
    memory_budget: Footprint = Footprint()  # host and device bytes the loaded models may take (0: no budget)
    default_ttl_s: float = 0  # 0: never unload for idleness

    @property
    def bounded(self) -> bool:
        return bool(self.max_loaded or self.memory_budget.total)


class ModelCache:
    def __init__(self, fetch: Fetch, defaults: LlamaDefaults, limits: CacheLimits = CacheLimits(),
                 discard: Discard | None = None, loader: Loader = load_model,
                 loaded: Callable[[ModelSpec], None] | None = None) -> None:
        self.fetch, self.defaults, self.limits, self.loader = fetch, defaults, limits, loader
        self.loaded = loaded  # told when a load from a fetched file ended (a file staged in memory goes)
        self.discard = discard or _keep
        self._entries: dict[str, CacheEntry] = {}
        self._loading: dict[str, asyncio.Future[CacheEntry]] = {}
        self._waiting: collections.Counter[str] = collections.Counter()  # leases awaiting a model's load
        self._admission = asyncio.Lock()  # with limits, one load at a time decides what to evict
        self._estimates: dict[tuple[str, Path, int, int], Footprint] = {}
        self.failures: dict[str, str] = {}

    @property
    def memory(self) -> Footprint:
        """What the loaded models take, as llama.cpp reported allocating."""
        return sum((entry.memory for entry in self._entries.values()), Footprint())

    async def estimate(self, spec: ModelSpec, path: Path) -> Footprint:
        """What `spec` would take loaded from `path` (cached per file version)."""
        stat = path.stat()
        key = (spec.name, path, stat.st_size, stat.st_mtime_ns)
        if key not in self._estimates:
            self._estimates[key] = await asyncio.to_thread(estimate_model_bytes, spec, path, self.defaults)
        return self._estimates[key]

    def known_estimate(self, spec: ModelSpec, path: Path) -> Footprint | None:
        """The estimate made earlier for this file version, if any (never computed here)."""
        try:
            stat = path.stat()
        except OSError:
            return None
        return self._estimates.get((spec.name, path, stat.st_size, stat.st_mtime_ns))

    def is_loaded(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> CacheEntry | None:
        return self._entries.get(name)

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def state(self, name: str) -> ModelState:
        if name in self._entries:
            return "ready"
        if name in self._loading:
            return "loading"
        return "failed" if name in self.failures else "not_loaded"

    async def lease(self, spec: ModelSpec) -> Lease:
        entry, waited = self._entries.get(spec.name), False
        if entry is None:
            pending = self._loading.get(spec.name)
            if pending is None:
                pending = self._loading[spec.name] = asyncio.ensure_future(self._load(spec))
                pending.add_done_callback(lambda _: self._loading.pop(spec.name, None))
            self._waiting[spec.name] += 1  # keeps the entry from eviction until this lease holds it
            try:
                entry, waited = await asyncio.shield(pending), True
            finally:
                self._waiting[spec.name] -= 1
                if not self._waiting[spec.name]:
                    del self._waiting[spec.name]
        entry.in_use += 1
        entry.last_used = time.monotonic()
        return Lease(entry, entry.cold_start if waited else None)

    async def unload(self, name: str) -> bool:
        entry = self._entries.get(name)
        if entry is None:
            return False
        if self._busy(entry):
            raise Conflict(f"model '{name}' has {entry.in_use} request(s) in flight", param="name")
        self._evict(entry)
        return True

    def unload_idle(self) -> list[str]:
        """Unload the models idle for longer than their TTL; returns their names."""
        now, gone = time.monotonic(), []
        for entry in list(self._entries.values()):
            ttl = entry.spec.ttl_s if entry.spec.ttl_s is not None else self.limits.default_ttl_s
            if ttl > 0 and not self._busy(entry) and now - entry.last_used > ttl:
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

    def _busy(self, entry: CacheEntry) -> bool:
        return entry.in_use > 0 or self._waiting[entry.spec.name] > 0

    def _make_room(self, spec: ModelSpec, cost: Footprint) -> list[CacheEntry]:
        """Evict idle models (least recently used first) until `spec`, costing `cost`, fits; returns them."""
        limit, budget = self.limits.max_loaded, self.limits.memory_budget
        for where, needed, allowed, setting in (("host", cost.host, budget.host, "MAX_MODEL_MEMORY_MB"),
                                                 ("GPU", cost.device, budget.device, "MAX_GPU_MEMORY_MB")):
            if allowed and needed > allowed:
                raise ModelTooLarge(f"model '{spec.name}' needs about {needed / MIB:.0f} MiB of {where} memory, "
                                    f"more than the budget of {allowed / MIB:.0f} MiB ({setting})")
        evicted: list[CacheEntry] = []
        while (limit and len(self._entries) >= limit) or not _fits(self.memory + cost, budget):
            idle = [entry for entry in self._entries.values() if not self._busy(entry)]
            if not idle:
                raise ServiceUnavailable(f"no room to load model '{spec.name}': the {len(self._entries)} loaded "
                                         "model(s) are busy; try again shortly", code="model_capacity",
                                         retry_after_s=5)
            evicted.append(min(idle, key=lambda entry: entry.last_used))
            self._evict(evicted[-1])
        return evicted

    async def _load(self, spec: ModelSpec) -> CacheEntry:
        try:
            started = time.perf_counter()
            path = await self.fetch(spec)
            fetched = time.perf_counter()
            # With limits, one load at a time: room is made for it, and counted, before it starts.
            async with self._admission if self.limits.bounded else contextlib.nullcontext():
                cost = await self.estimate(spec, path) if self.limits.memory_budget.total else None
                for evicted in self._make_room(spec, cost or Footprint()):
                    # Its memory (on a GPU: device memory) is freed on its own thread: wait for that, or the
                    # new model could be refused memory the old one still holds.
                    await asyncio.to_thread(evicted.model.join, EVICTION_WAIT_S)
                loaded = await self._load_file(spec, path)
                cold_start = ColdStart(sync_seconds=fetched - started, load_seconds=time.perf_counter() - fetched)
                entry = self._entries[spec.name] = CacheEntry(spec=spec, model=loaded.model, cold_start=cold_start,
                                                              memory=loaded.memory, estimate=cost)
        except Exception as exc:
            self.failures[spec.name] = getattr(exc, "message", None) or str(exc)
            raise
        log.info("loaded model %s from %s in %.2fs (%.0f MiB host, %.0f MiB GPU)", spec.name, path,
                 cold_start.load_seconds, loaded.memory.host / MIB, loaded.memory.device / MIB)
        self.failures.pop(spec.name, None)
        return entry

    async def _load_file(self, spec: ModelSpec, path: Path) -> Loaded:
        try:
            return await asyncio.to_thread(self.loader, spec, path, self.defaults)
        except ModelLoadFailed as exc:
            if await self.discard(spec):  # only a file that is itself broken; a bad setting keeps it
                raise ModelLoadFailed(f"{exc.message}; the synced copy is not a valid GGUF file and was "
                                      "removed: the next request syncs it again") from exc
            raise
        finally:
            if self.loaded is not None:
                self.loaded(spec)
