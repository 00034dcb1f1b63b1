"""The process-wide model cache: one loaded instance per model name, loaded once however many ask.

Owned by the app (created and closed by its lifespan). The first request for a model fetches its
file (`fetch`, the store's job) and loads it off the event loop; requests arriving meanwhile await the
same load (single flight) and all get its result or its error. A failed load is not cached, so the
next request tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Union

import attrs

from handler.engine.embedding import EmbeddingModel
from handler.engine.llama_options import LlamaDefaults, llama_kwargs
from handler.engine.serial_chat import SerialChatModel
from handler.errors import InvalidRequest, ModelLoadFailed
from handler.store.manifest import ModelSpec

log = logging.getLogger(__name__)
LoadedModel = Union[SerialChatModel, EmbeddingModel]
Fetch = Callable[[ModelSpec], Awaitable[Path]]


def load_model(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> LoadedModel:
    """Load `spec` from `path` (blocking: call it off the event loop)."""
    embedding = spec.kind == "embedding"
    kwargs = llama_kwargs(defaults, spec.options, embedding=embedding)
    try:
        if embedding:
            return EmbeddingModel(spec.name, path, kwargs, spec.options.get("pooling"))
        return SerialChatModel(spec.name, path, kwargs, spec.chat_format)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadFailed(f"model '{spec.name}' failed to load from {path.name}: {exc}") from exc


@attrs.define
class ModelCache:
    fetch: Fetch
    defaults: LlamaDefaults
    _loaded: dict[str, LoadedModel] = attrs.field(factory=dict, init=False)
    _loading: dict[str, asyncio.Future[LoadedModel]] = attrs.field(factory=dict, init=False)
    load_seconds: dict[str, float] = attrs.field(factory=dict, init=False)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    async def get(self, spec: ModelSpec) -> LoadedModel:
        model = self._loaded.get(spec.name)
        if model is not None:
            return model
        pending = self._loading.get(spec.name)
        if pending is None:
            pending = asyncio.ensure_future(self._load(spec))
            self._loading[spec.name] = pending
        return await asyncio.shield(pending)

    async def chat_model(self, spec: ModelSpec) -> SerialChatModel:
        if spec.kind != "chat":
            raise InvalidRequest(f"'{spec.name}' is an embedding model; use /v1/embeddings", param="model",
                                 code="model_not_chat")
        model = await self.get(spec)
        assert isinstance(model, SerialChatModel)
        return model

    async def embedding_model(self, spec: ModelSpec) -> EmbeddingModel:
        if spec.kind != "embedding":
            raise InvalidRequest(f"'{spec.name}' is a chat model; use /v1/chat/completions", param="model",
                                 code="model_not_embedding")
        model = await self.get(spec)
        assert isinstance(model, EmbeddingModel)
        return model

    async def unload(self, name: str) -> bool:
        model = self._loaded.pop(name, None)
        if model is None:
            return False
        model.close()
        return True

    async def close(self) -> None:
        for name in list(self._loaded):
            await self.unload(name)

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        try:
            path = await self.fetch(spec)
            started = time.perf_counter()
            model = await asyncio.to_thread(load_model, spec, path, self.defaults)
            self.load_seconds[spec.name] = time.perf_counter() - started
            log.info("loaded model %s from %s in %.2fs", spec.name, path, self.load_seconds[spec.name])
            self._loaded[spec.name] = model
            return model
        finally:
            self._loading.pop(spec.name, None)
