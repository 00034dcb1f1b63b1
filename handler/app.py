"""The Litestar application.

Request flow: a route in `handler.api` validates the body, looks the model up in the catalog
(`handler.store`), takes a lease on it from the process-wide `ModelCache` (`handler.engine`, which
has the store sync the file and loads it once, however many requests ask), lets the engine render,
generate and parse, and shapes the result as OpenAI does. Every error, ours or the framework's,
leaves through one mapper (`handler.api.errors`).

Lifespan: start returns at once (the port answers /health immediately) while the warm set syncs and
loads in the background (`/health/ready` tells when it is done); idle models are unloaded on their
TTL; SIGTERM drains in-flight requests before the models are freed.

`granian --interface asgi --factory handler.app:build` serves the app built from the environment;
`handler.app:app` still works (built on first access, not at import).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp

from handler.api.admin import ModelAdminController
from handler.api.auth import api_key_guard
from handler.api.calls import ModelCalls
from handler.api.dependencies import DEPENDENCIES
from handler.api.errors import shaped_by_path
from handler.api.health import health, ready
from handler.api.health_port import serve_health_port
from handler.api.metrics import StateCollector, register_state_collector, step_recorder, unregister_state_collector
from handler.api.models import ModelsController
from handler.api.openapi import CompletedJsonRenderPlugin
from handler.api.platforms import invocations, ping, readiness, vertex_routes
from handler.api.playground import playground_routes
from handler.api.protocols.chat import ChatCompletionRequest
from handler.api.protocols.completions import CompletionRequest
from handler.api.protocols.messages import CountTokensRequest, MessagesRequest
from handler.api.protocols.responses import ResponsesRequest
from handler.api.request_log import request_log_middleware
from handler.api.routes.chat import ChatController
from handler.api.routes.completions import CompletionsController
from handler.api.routes.embeddings import EmbeddingRequest, EmbeddingsController
from handler.api.routes.messages import MessagesController
from handler.api.routes.responses import ResponsesController
from handler.api.routes.tokens import DetokenizeRequest, TokenizerController, TokenizeRequest
from handler.api.snapshot import SnapshotController
from handler.api.warm_prompts import WarmPromptError, warm_prompt_request
from handler.engine.cache import Loader, ModelCache
from handler.engine.loading import load_model
from handler.engine.types import ChatRequest
from handler.lifecycle import Lifecycle
from handler.logs import configure_logging
from handler.settings import Settings
from handler.store.manifest import ManifestError, ModelSpec
from handler.store.model_store import ModelStore
from handler.warmup import WarmUp
from handler.wiring import (
    build_cache,
    build_catalog,
    build_prefix_store,
    build_store,
    describe_devices,
    load_checked_manifest,
    take_early_store,
    warm_set,
)

log = logging.getLogger("handler")
IDLE_CHECK_INTERVAL_S = 1.0
REQUEST_TYPES: list[type] = [ChatCompletionRequest, CompletionRequest, ResponsesRequest, MessagesRequest,
                             CountTokensRequest, EmbeddingRequest, TokenizeRequest, DetokenizeRequest]
CUT_STREAMS_FLUSH_S = 5.0


async def _unload_idle_models(cache: ModelCache) -> None:
    while True:
        await asyncio.sleep(IDLE_CHECK_INTERVAL_S)
        cache.unload_idle()


async def _cut_overdue_requests(lifecycle: Lifecycle, cache: ModelCache, store: ModelStore,
                                 timeout_s: float) -> None:
    """Once draining, requests get DRAIN_TIMEOUT_S to finish; then the downloads under way stop (a request
    waiting for its model's sync gets the drain's 503) and the models are unloaded, which cuts the
    generations still running: their streams end with an error event, never a bare [DONE]. (granian
    waits for every open response before the lifespan's shutdown runs: a request waiting on a large
    download would otherwise hold the process until the download ended.)"""
    if not await lifecycle.wait_idle(timeout_s):
        log.warning("drain timeout: cutting %d request(s) still in flight", lifecycle.in_flight)
        store.stop_downloads()
        await cache.close()


def _warm_prompts(declared: tuple[ModelSpec, ...]) -> dict[str, list[ChatRequest]]:
    """Each model's manifest warm prompts as chat requests, checked at start like the rest of the manifest."""
    prompts: dict[str, list[ChatRequest]] = {}
    for spec in declared:
        for number, body in enumerate(spec.warm_prompts, 1):
            try:
                prompts.setdefault(spec.name, []).append(warm_prompt_request(spec.name, body))
            except WarmPromptError as exc:
                raise ManifestError(f"{spec.name}: warm prompt {number} is not a valid chat request: {exc}") from None
    return prompts


def _lifespan(settings: Settings, declared: tuple[ModelSpec, ...], loader: Loader,
              prompts: dict[str, list[ChatRequest]]) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store = take_early_store(settings, declared) or build_store(settings, build_catalog(settings, declared))
        catalog = store.catalog
        for leftover in await store.run_blocking(store.clean_leftovers):
            log.info("removed the partial download %s", leftover.name)
        prefixes = build_prefix_store(settings)
        cache = build_cache(settings, store, loader, step_observer=step_recorder, prefixes=prefixes)
        lifecycle = Lifecycle(on_drain=lambda: _cut_overdue_requests(lifecycle, cache, store, settings.drain_timeout_s))
        warmup = WarmUp(warm_set(settings, catalog), store, cache, prompts)
        for name in set(prompts) - {spec.name for spec in warmup.specs}:
            log.warning("%s has warm prompts but is not in the warm set (warm = true or WARM_MODELS): "
                        "they are not read", name)
        lifecycle.install_signal_handlers()
        app.state.update(settings=settings, catalog=catalog, model_store=store, model_cache=cache,
                         lifecycle=lifecycle, warmup=warmup, model_calls=ModelCalls(catalog, cache, lifecycle),
                         prefix_store=prefixes)
        collector = StateCollector(cache, store, lifecycle, warmup, prefixes)
        register_state_collector(collector)
        warmup.start()
        reaper = asyncio.create_task(_unload_idle_models(cache), name="idle-unloader")
        health_port = None if settings.health_port is None else await serve_health_port(
            settings.host, settings.health_port, lambda: readiness(warmup, lifecycle))
        log.info("serving %d model(s) from %s; warm set: %s; %s", len(catalog.all()), settings.model_dir,
                 ", ".join(spec.name for spec in warmup.specs) or "none", describe_devices(settings))
        try:
            yield
        finally:
            lifecycle.start_draining()  # SIGTERM started it already, unless the server stops another way
            await lifecycle.drained()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if health_port is not None:
                health_port.close()
            await warmup.stop()
            await cache.close()
            store.close()
            if prefixes is not None:
                await asyncio.to_thread(prefixes.close)  # the prefixes being written are finished
            # Streams cut by the unload still send their error event and [DONE] before the loop ends.
            await lifecycle.wait_idle(CUT_STREAMS_FLUSH_S)
            unregister_state_collector(collector)

    return lifespan


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False  # Prometheus text, not part of the JSON API


def create_app(settings: Settings, *, loader: Loader = load_model) -> Litestar:
    """The app for `settings`; `loader` loads a model file (tests pass a fake one to run without llama.cpp)."""
    declared = load_checked_manifest(settings)
    prompts = _warm_prompts(declared)
    app_errors = shaped_by_path(MessagesController.path)
    prometheus = PrometheusConfig(app_name="serverless_gguf", prefix="gguf_http", group_path=True,
                                  exclude=["/metrics", "/health"])
    app = Litestar(
        route_handlers=[ChatController, CompletionsController, ResponsesController, MessagesController,
                        EmbeddingsController,
                        TokenizerController,
                        ModelsController, ModelAdminController, SnapshotController, health, ready, MetricsController,
                        ping, invocations, *vertex_routes(settings), *playground_routes()],
        middleware=[prometheus.middleware],
        dependencies={name: Provide(provider, sync_to_thread=False) for name, provider in DEPENDENCIES.items()},
        lifespan=[_lifespan(settings, declared, loader, prompts)],
        guards=[api_key_guard(settings.api_keys)],
        exception_handlers={HTTPException: app_errors, Exception: app_errors},
        cors_config=CORSConfig(allow_origins=list(settings.cors_allow_origins)),
        openapi_config=OpenAPIConfig(
            title="serverless-gguf", version="0.1.0", path="/schema",
            render_plugins=[CompletedJsonRenderPlugin(REQUEST_TYPES),
                            SwaggerRenderPlugin(), RedocRenderPlugin()]),
        request_max_body_size=settings.max_body_bytes,
    )
    return app


def with_request_log(asgi_app: Litestar) -> ASGIApp:
    """Outside Litestar's routing, so unknown routes get request ids and log lines too."""
    return request_log_middleware(asgi_app)


def build() -> ASGIApp:
    """The app from the environment: `granian --factory handler.app:build`."""
    configure_logging()
    return with_request_log(create_app(Settings.from_env(os.environ)))


def __getattr__(name: str) -> ASGIApp:
    """`handler.app:app` (existing commands) builds the app when first asked for, not at import."""
    if name == "app":
        globals()["app"] = built = build()
        return built
    raise AttributeError(name)
