"""The model cache with fake models: a load that evicts another model starts only once the evicted
model's thread has ended (its context, on a GPU its device memory, freed)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from handler.engine.cache import CacheLimits, ModelCache
from handler.engine.llama_options import LlamaDefaults
from handler.engine.loading import Loaded
from handler.engine.types import Footprint, QueueLimits
from handler.errors import ModelTooLarge
from handler.store.manifest import ModelSpec
from tests.support.fake_engine import FakeChatModel, fake_loader


class _SlowToFree(FakeChatModel):
    """Frees its memory on its own thread, some time after `close`."""

    events: list[str]

    def close(self) -> None:
        self._freed = threading.Event()
        threading.Timer(0.2, self._free).start()  # the scheduler thread finishing its step

    def _free(self) -> None:
        self.events.append(f"freed {self.name}")
        self._freed.set()

    def join(self, timeout_s: float) -> None:
        self._freed.wait(timeout_s)


def test_a_load_that_evicts_waits_until_the_evicted_model_is_freed(tmp_path):
    events: list[str] = []

    def loader(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> Loaded:
        events.append(f"load {spec.name}")
        loaded = fake_loader(spec, path, defaults)
        model = _SlowToFree.__new__(_SlowToFree)
        model.__dict__.update(loaded.model.__dict__)
        model.events = events
        return Loaded(model, loaded.memory)

    async def fetch(spec: ModelSpec) -> Path:
        return tmp_path / f"{spec.name}.gguf"

    defaults = LlamaDefaults(n_ctx=256, n_batch=64, n_threads=1, n_gpu_layers=0, verbose=False, n_parallel=1,
                             queue=QueueLimits(), step_target_ms=100)
    cache = ModelCache(fetch, defaults, CacheLimits(max_loaded=1), loader=loader)

    async def scenario():
        for name in ("first", "second"):
            lease = await cache.lease(ModelSpec(name=name, kind="chat", source=f"{name}.gguf"))
            lease.release()

    asyncio.run(scenario())
    assert events == ["load first", "freed first", "load second"]


MIB = 1024 * 1024
# Each model's cost: (host MiB, GPU MiB), as estimated and as loaded.
COSTS = {"small-gpu": (100, 600), "big-gpu": (100, 700), "host-heavy": (900, 0)}


def _budgeted_cache(tmp_path, monkeypatch, budget: Footprint, loads: list[str]) -> ModelCache:
    def cost(name: str) -> Footprint:
        host, device = COSTS[name]
        return Footprint(host=host * MIB, device=device * MIB)

    monkeypatch.setattr("handler.engine.cache.estimate_model_bytes", lambda spec, path, defaults: cost(spec.name))

    def loader(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> Loaded:
        loads.append(spec.name)
        return Loaded(fake_loader(spec, path, defaults).model, cost(spec.name))

    async def fetch(spec: ModelSpec) -> Path:
        path = tmp_path / f"{spec.name}.gguf"
        path.write_bytes(b"GGUF")
        return path

    defaults = LlamaDefaults(n_ctx=256, n_batch=64, n_threads=1, n_gpu_layers=0, verbose=False, n_parallel=1,
                             queue=QueueLimits(), step_target_ms=100)
    return ModelCache(fetch, defaults, CacheLimits(memory_budget=budget), loader=loader)


def _use(cache: ModelCache, *names: str) -> None:
    async def scenario():
        for name in names:
            (await cache.lease(ModelSpec(name=name, kind="chat", source=f"{name}.gguf"))).release()

    asyncio.run(scenario())


def test_gpu_memory_is_budgeted_apart_from_host_memory(tmp_path, monkeypatch):
    """Two models whose sum fits the host budget but not the GPU's: the second load evicts the first.
    Summing host and GPU bytes against one budget (as before) kept both loaded and let the GPU overflow."""
    loads: list[str] = []
    cache = _budgeted_cache(tmp_path, monkeypatch, Footprint(host=2000 * MIB, device=1000 * MIB), loads)
    _use(cache, "small-gpu", "big-gpu")
    assert [entry.spec.name for entry in cache.entries()] == ["big-gpu"]
    assert cache.memory == Footprint(host=100 * MIB, device=700 * MIB)
    _use(cache, "host-heavy")  # no GPU memory: fits beside the GPU model
    assert sorted(entry.spec.name for entry in cache.entries()) == ["big-gpu", "host-heavy"]


def test_host_memory_alone_can_evict(tmp_path, monkeypatch):
    loads: list[str] = []
    cache = _budgeted_cache(tmp_path, monkeypatch, Footprint(host=950 * MIB), loads)  # no GPU budget
    _use(cache, "small-gpu", "big-gpu")  # 200 MiB of host, GPU unbudgeted: both stay
    assert len(cache.entries()) == 2
    _use(cache, "host-heavy")
    assert [entry.spec.name for entry in cache.entries()] == ["host-heavy"]


def test_a_model_larger_than_the_gpu_budget_is_refused_naming_that_budget(tmp_path, monkeypatch):
    cache = _budgeted_cache(tmp_path, monkeypatch, Footprint(host=4000 * MIB, device=650 * MIB), [])
    with pytest.raises(ModelTooLarge, match=r"700 MiB of GPU memory.*650 MiB \(MAX_GPU_MEMORY_MB\)"):
        _use(cache, "big-gpu")
