"""GET /v1/models, /v1/models/chat, /v1/models/embeddings and /v1/models/{id}: OpenAI model objects,
plus what this server adds (kind, source, whether the file is on the volume, whether it is loaded, and
one `state` that sums up where the model is: remote → downloading → on_volume → loading → loaded).
Each also carries the fields of Anthropic's model object (`type`, `display_name`, `created_at`) and the
list those of its page (`has_more`, `first_id`, `last_id`): the same route serves both SDKs."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Literal

import msgspec
from litestar import Controller, get
from litestar.params import FromPath

from handler.api.dependencies import CacheDep, CatalogDep, StoreDep
from handler.api.errors import ERROR_RESPONSES
from handler.engine.batching import BatchingChatModel
from handler.engine.cache import ModelCache
from handler.engine.devices import devices
from handler.engine.llama_options import resolve_options
from handler.errors import ModelLoadFailed
from handler.store.catalog import ModelCatalog
from handler.store.manifest import ModelKind, ModelSpec
from handler.store.model_store import ModelStore

ModelState = Literal["remote", "downloading", "on_volume", "loading", "loaded", "failed"]


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    created: int
    owned_by: str
    kind: ModelKind
    source: str
    downloaded: bool
    loaded: bool
    state: ModelState
    size: int | None = None
    memory_estimate_bytes: int | None = None  # what it would take loaded (on /v1/models/{id}, once downloaded)
    memory_bytes: int | None = None  # what it takes, while loaded
    # The part of each on GPUs (the rest is host memory): budgeted apart by MAX_GPU_MEMORY_MB.
    gpu_memory_estimate_bytes: int | None = None
    gpu_memory_bytes: int | None = None
    gpu_layers: int | None = None  # layers placed on the GPU (-1: all), on /v1/models/{id}
    devices: list[str] | None = None  # the GPUs llama.cpp sees (empty: it runs on the CPU), on /v1/models/{id}
    # What restoring a saved prefix is weighed against, as measured here (null until measured), while
    # loaded: prompt tokens read a second, KV state bytes loaded into a slot a second.
    prefill_tokens_per_s: float | None = None
    restore_bytes_per_s: float | None = None
    display_name: str
    created_at: str  # `created`, as RFC 3339
    object: Literal["model"] = "model"
    type: Literal["model"] = "model"


class ModelList(msgspec.Struct, kw_only=True):
    data: list[ModelCard]
    first_id: str | None
    last_id: str | None
    has_more: bool = False  # every model is on the one page
    object: Literal["list"] = "list"


def _state(spec: ModelSpec, downloaded: bool, cache: ModelCache, store: ModelStore) -> ModelState:
    loading = cache.state(spec.name)
    if loading in ("ready", "loading", "failed"):
        return "loaded" if loading == "ready" else loading
    if downloaded:
        return "on_volume"
    progress = store.progress_of(spec)
    if progress is not None and progress.in_flight:
        return "downloading"
    return "failed" if progress is not None and progress.state == "failed" else "remote"


def _card(spec: ModelSpec, catalog: ModelCatalog, cache: ModelCache, store: ModelStore) -> ModelCard:
    path = catalog.path_of(spec)
    size: int | None
    try:
        stat = path.stat()
        created, size, downloaded = int(stat.st_mtime), stat.st_size, True
    except OSError:
        created, size, downloaded = 0, spec.size, False
    entry, estimate = cache.entry(spec.name), cache.known_estimate(spec, path)
    created_at = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    return ModelCard(id=spec.name, display_name=spec.name, created=created, created_at=created_at,
                     owned_by="serverless-gguf", kind=spec.kind,
                     source=spec.source if spec.declared else "local", downloaded=downloaded,
                     loaded=entry is not None, state=_state(spec, downloaded, cache, store), size=size,
                     memory_bytes=entry.memory.total if entry else None,
                     gpu_memory_bytes=entry.memory.device if entry else None,
                     memory_estimate_bytes=estimate.total if estimate else None,
                     gpu_memory_estimate_bytes=estimate.device if estimate else None)


async def _list(catalog: ModelCatalog, cache: ModelCache, store: ModelStore,
                kind: ModelKind | None = None) -> ModelList:
    specs = await catalog.list_all()
    cards = [_card(spec, catalog, cache, store) for spec in specs if kind in (None, spec.kind)]
    return ModelList(data=cards, first_id=cards[0].id if cards else None, last_id=cards[-1].id if cards else None)


class ModelsController(Controller):
    path = "/v1/models"
    tags = ["models"]

    @get(summary="List all models", responses=ERROR_RESPONSES)
    async def list_all(self, catalog: CatalogDep, cache: CacheDep, model_store: StoreDep) -> ModelList:
        return await _list(catalog, cache, model_store)

    @get("/chat", summary="List chat models", responses=ERROR_RESPONSES)
    async def list_chat(self, catalog: CatalogDep, cache: CacheDep, model_store: StoreDep) -> ModelList:
        return await _list(catalog, cache, model_store, "chat")

    @get("/embeddings", summary="List embedding models", responses=ERROR_RESPONSES)
    async def list_embeddings(self, catalog: CatalogDep, cache: CacheDep, model_store: StoreDep) -> ModelList:
        return await _list(catalog, cache, model_store, "embedding")

    @get("/{model_id:str}", summary="Retrieve a model", responses=ERROR_RESPONSES)
    async def retrieve(self, model_id: FromPath[str], catalog: CatalogDep, cache: CacheDep,
                       model_store: StoreDep) -> ModelCard:
        spec = await catalog.find(model_id)
        card = _card(spec, catalog, cache, model_store)
        if card.downloaded:
            with contextlib.suppress(ModelLoadFailed, OSError):  # a file llama.cpp cannot read has no estimate
                estimate = await cache.estimate(spec, catalog.path_of(spec))
                card.memory_estimate_bytes, card.gpu_memory_estimate_bytes = estimate.total, estimate.device
        card.gpu_layers = resolve_options(cache.defaults, spec.options).n_gpu_layers
        card.devices = [f"{device.name} ({device.description})" for device in devices() if device.is_gpu]
        if (entry := cache.entry(spec.name)) is not None and isinstance(model := entry.model, BatchingChatModel):
            card.prefill_tokens_per_s = model.prefill_rate.per_second
            card.restore_bytes_per_s = model.restore_rate.per_second
        return card
