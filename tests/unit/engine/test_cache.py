"""The model cache with fake models: a load that evicts another model starts only once the evicted
model's thread has ended (its context, on a GPU its device memory, freed)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from handler.engine.cache import CacheLimits, ModelCache
from handler.engine.llama_options import LlamaDefaults
from handler.engine.loading import Loaded
from handler.engine.types import QueueLimits
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
        return Loaded(model, loaded.memory_bytes)

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
