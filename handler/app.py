"""The Litestar application.

Request flow: a route in `handler.api` validates the body, looks the model up in the catalog
(`handler.store`), gets it from the process-wide `ModelCache` (`handler.engine`, which fetches the
file through the store and loads it once), lets the engine render, generate and parse, and shapes
the result as OpenAI does. Every error, ours or the framework's, leaves through one mapper
(`handler.api.errors`).

`granian --interface asgi handler.app:app` serves the module-level `app`, built from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin

from handler.api.admin import ModelAdminController
from handler.api.chat import ChatController
from handler.api.dependencies import DEPENDENCIES
from handler.api.embeddings import EmbeddingsController
from handler.api.errors import openai_error_handler
from handler.api.health import health
from handler.api.models import ModelsController
from handler.settings import Settings
from handler.wiring import build_cache, build_catalog, build_store
from handler.store.manifest import load_manifest

log = logging.getLogger("handler")


def _lifespan(settings: Settings):  # noqa: ANN202 - Litestar takes the context manager factory
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        catalog = build_catalog(settings)
        store = build_store(settings, catalog)
        for leftover in await asyncio.to_thread(store.clean_leftovers):
            log.info("removed the partial download %s", leftover.name)
        cache = build_cache(settings, store)
        app.state.update(settings=settings, catalog=catalog, model_store=store, model_cache=cache)
        log.info("serving %d model(s) from %s", len(catalog.all()), settings.model_dir)
        try:
            yield
        finally:
            await cache.close()

    return lifespan


def create_app(settings: Settings) -> Litestar:
    # Fail at start, not at first request, when the manifest is wrong.
    load_manifest(settings.manifest_path)
    return Litestar(
        route_handlers=[ChatController, EmbeddingsController, ModelsController, ModelAdminController, health],
        dependencies={name: Provide(provider, sync_to_thread=False) for name, provider in DEPENDENCIES.items()},
        lifespan=[_lifespan(settings)],
        exception_handlers={HTTPException: openai_error_handler, Exception: openai_error_handler},
        cors_config=CORSConfig(allow_origins=list(settings.cors_allow_origins)),
        openapi_config=OpenAPIConfig(title="serverless-gguf", version="0.1.0", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin(), RedocRenderPlugin()]),
        request_max_body_size=settings.max_body_bytes,
    )


def _app_from_environment() -> Litestar:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings.from_env(os.environ))


app = _app_from_environment()
