"""What every model request does around its work: admission while not draining, a lease on the
model, cold-start timing headers, release when the response (or the stream) ends, and cancellation
when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import attrs
from litestar import Request

from handler.api.metrics import record_cold_start
from handler.api.request_log import request_summary
from handler.engine.cache import Lease, ModelCache
from handler.lifecycle import Lifecycle
from handler.store.manifest import ModelKind, ModelSpec

T = TypeVar("T")


@attrs.define
class RequestScope:
    lifecycle: Lifecycle
    lease: Lease
    first_request: bool
    _closed: bool = False

    def headers(self) -> dict[str, str]:
        """`x-cold-start` and `Server-Timing` when this request waited for a sync or a load."""
        headers = {"x-first-request": "true"} if self.first_request else {}
        cold = self.lease.cold_start
        if cold is not None:
            sync_ms, load_ms = round(cold.sync_seconds * 1000), round(cold.load_seconds * 1000)
            headers["x-cold-start"] = f"sync={sync_ms}ms;load={load_ms}ms"
            headers["Server-Timing"] = f"sync;dur={sync_ms}, load;dur={load_ms}"
        return headers

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.lease.release()
            self.lifecycle.end()


def describe_request(request: Request[Any, Any, Any], scope: RequestScope, model: str) -> dict[str, Any]:
    """Start this request's log line and metrics: the model, and the cold start it waited for."""
    summary = request_summary(request.scope.get("state"))
    summary["model"] = model
    if (cold := scope.lease.cold_start) is not None:
        summary.update(sync_ms=round(cold.sync_seconds * 1000), load_ms=round(cold.load_seconds * 1000))
    record_cold_start(scope.lease.cold_start, model)
    return summary


async def open_scope(lifecycle: Lifecycle, cache: ModelCache, spec: ModelSpec, kind: ModelKind) -> RequestScope:
    first = lifecycle.begin()
    try:
        lease = await cache.lease(spec, kind)
    except BaseException:
        lifecycle.end()
        raise
    return RequestScope(lifecycle, lease, first)


async def close_after(scope: RequestScope, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Stream `body`, then release the scope, however the stream ends (client gone included)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        scope.close()
        await body.aclose()


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first (its generation stops with it)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return await task
