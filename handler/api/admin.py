"""Model management: pull (download without loading, with progress), load, unload, delete the file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, delete, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from handler.api.answers.sse import sse_event
from handler.api.dependencies import CacheDep, CatalogDep, StoreDep
from handler.api.errors import ERROR_RESPONSES, error_body
from handler.errors import Conflict

PROGRESS_INTERVAL_S = 0.25


def _wants_events(request: Request[Any, Any, Any], stream: bool) -> bool:
    return stream or "text/event-stream" in request.headers.get("accept", "")


class ModelAdminController(Controller):
    path = "/models/{name:str}"
    tags = ["model management"]

    @post("/pull", status_code=200, responses=ERROR_RESPONSES,
          summary="Download a model's file without loading it (progress as Server-Sent Events with `?stream=true`)")
    async def pull(self, name: FromPath[str], request: Request[Any, Any, Any], catalog: CatalogDep,
                   model_store: StoreDep, stream: FromQuery[bool] = False) -> Any:
        spec = await catalog.find(name)
        task = asyncio.ensure_future(model_store.ensure_local(spec))
        if not _wants_events(request, stream):
            path = await task
            progress = model_store.progress_of(spec)
            return {"model": spec.name, "file": path.name, **(progress.as_dict() if progress else {})}
        return Stream(_progress_events(task, lambda: model_store.progress_of(spec)), media_type="text/event-stream")

    @post("/load", status_code=200, responses=ERROR_RESPONSES, summary="Sync if needed and load a model into memory")
    async def load(self, name: FromPath[str], catalog: CatalogDep, cache: CacheDep) -> dict[str, Any]:
        spec = await catalog.find(name)
        lease = await cache.lease(spec)
        lease.release()
        cold = lease.entry.cold_start
        return {"model": spec.name, "loaded": True, "sync_seconds": cold.sync_seconds,
                "load_seconds": cold.load_seconds}

    @post("/unload", status_code=200, responses=ERROR_RESPONSES,
          summary="Free a loaded model (its file stays on the volume)")
    async def unload(self, name: FromPath[str], catalog: CatalogDep, cache: CacheDep) -> dict[str, Any]:
        spec = await catalog.find(name)
        return {"model": spec.name, "unloaded": await cache.unload(spec.name)}

    @delete("/file", status_code=200, responses=ERROR_RESPONSES,
            summary="Delete a model's file from the volume (refused while loaded)")
    async def delete_file(self, name: FromPath[str], catalog: CatalogDep, cache: CacheDep,
                          model_store: StoreDep) -> dict[str, Any]:
        spec = await catalog.find(name)
        path = catalog.path_of(spec)
        users = [other.name for other in await catalog.list_all()
                 if catalog.path_of(other) == path and cache.is_loaded(other.name)]
        if users:
            raise Conflict(f"{path.name} is in use ({', '.join(users)}); unload it first", param="name")
        return {"model": spec.name, "deleted": await model_store.delete_synced_copy(spec)}


async def _progress_events(task: asyncio.Future[Any], progress: Any) -> AsyncIterator[bytes]:
    try:
        while not task.done():
            current = progress()
            if current is not None:
                yield sse_event(current.as_dict())
            await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
        task.result()
        yield sse_event(progress().as_dict())
    except Exception as exc:  # the stream has started: report in-band
        yield sse_event(error_body(exc)[1])
