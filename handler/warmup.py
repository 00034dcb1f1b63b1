"""The warm set: models synced and loaded in the background at start, and the readiness they imply.

Downloads run one after another in manifest order, and so do loads, but the two overlap: the next
model downloads while the previous one loads. A request for a model still warming joins that same
sync and load (the store and the cache are single-flight) instead of starting another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from handler.engine.batching import BatchingChatModel
from handler.engine.cache import ModelCache
from handler.engine.chat import read_prompt
from handler.engine.early import EARLY_WEIGHTS
from handler.engine.types import ChatRequest
from handler.store.manifest import ModelSpec
from handler.store.model_store import ModelStore

log = logging.getLogger(__name__)


class WarmUp:
    def __init__(self, specs: Sequence[ModelSpec], store: ModelStore, cache: ModelCache,
                 prompts: Mapping[str, Sequence[ChatRequest]] | None = None) -> None:
        self.specs, self.store, self.cache = list(specs), store, cache
        self.prompts = prompts or {}  # model name → its manifest warm prompts, read before it counts as ready
        self.sync_errors: dict[str, str] = {}  # load failures are the cache's (`cache.failures`)
        self.done: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.specs:
            self._task = asyncio.create_task(self._run(), name="warm-up")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def ready(self) -> bool:
        return len(self.done) == len(self.specs)

    def error(self, spec: ModelSpec) -> str | None:
        if spec.name in self.done:
            return None
        return self.sync_errors.get(spec.name) or self.cache.failures.get(spec.name)

    def report(self) -> dict[str, dict[str, Any]]:
        return {spec.name: self._state(spec) for spec in self.specs}

    def _state(self, spec: ModelSpec) -> dict[str, Any]:
        if (error := self.error(spec)) is not None:
            return {"state": "failed", "error": error}
        if spec.name in self.done:
            return {"state": "ready"}
        progress = self.store.progress_of(spec)
        if progress is not None and progress.in_flight:
            return {"state": "downloading", "bytes_done": progress.bytes_done, "total": progress.total}
        if self.cache.state(spec.name) == "loading":
            return {"state": "loading"}
        return {"state": "pending"}

    async def _run(self) -> None:
        previous_load: asyncio.Future[Any] | None = None
        loads = []
        for spec in self.specs:
            try:
                await self.store.ensure_local(spec)
            except Exception as exc:
                self.sync_errors[spec.name] = getattr(exc, "message", None) or str(exc)
                log.error("warm-up of %s failed: %s", spec.name, self.sync_errors[spec.name])
                continue
            previous_load = asyncio.ensure_future(self._load_after(previous_load, spec))
            loads.append(previous_load)
        await asyncio.gather(*loads)
        for path in await asyncio.to_thread(EARLY_WEIGHTS.release):
            log.info("freed the weights read early from %s: the warm set did not use them", path.name)
        log.info("warm set ready: %s", ", ".join(sorted(self.done)) or "none")

    async def _load_after(self, previous: asyncio.Future[Any] | None, spec: ModelSpec) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            lease = await self.cache.lease(spec)
        except Exception:
            log.error("warm-up of %s failed: %s", spec.name, self.cache.failures.get(spec.name))
            return
        try:
            for number, request in enumerate(self.prompts.get(spec.name, ()), 1):
                await self._read_prompt(spec, lease.chat_model, number, request)
        finally:
            lease.release()
        self.done.add(spec.name)

    @staticmethod
    async def _read_prompt(spec: ModelSpec, model: BatchingChatModel, number: int, request: ChatRequest) -> None:
        """A warm prompt that cannot be read (too long for the context, say) is logged; the model
        still serves, so it still counts as ready."""
        try:
            started = await read_prompt(model, request)
        except Exception as exc:
            log.error("warm prompt %d of %s could not be read: %s", number, spec.name,
                      getattr(exc, "message", None) or exc)
            return
        restored = started.generation.restored_tokens
        log.info("warm prompt %d of %s read%s", number, spec.name,
                 f" ({restored} tokens restored from the volume)" if restored else "")
