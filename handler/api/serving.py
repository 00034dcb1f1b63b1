"""What every model request does around its work: admission while not draining, a lease on the
model, cold-start timing headers, release when the response (or the stream) ends, and cancellation
when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

import attrs
from litestar import Request

from handler.api.metrics import record_cold_start
from handler.api.request_log import request_summary
from handler.engine.cache import Lease, ModelCache
from handler.lifecycle import Lifecycle
from handler.store.manifest import ModelKind, ModelSpec

T = TypeVar("T")


class ClientWatch:
    """Notices the client leaving, with one `receive()` for the whole request: granian answers the
    next `receive()` with a disconnect once a pending one is cancelled, so the watch is never
    cancelled midway (between the wait for a slot and the reply, or before a stream)."""

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self._left = asyncio.ensure_future(self._wait(request))

    @staticmethod
    async def _wait(request: Request[Any, Any, Any]) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def unless_gone(self, work: Awaitable[T]) -> T:
        """Run `work`, cancelling it if the client leaves first (its generation stops with it)."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._left}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
        return await task

    def stop(self) -> None:
        self._left.cancel()


@attrs.define
class RequestScope:
    lifecycle: Lifecycle
    lease: Lease
    first_request: bool
    client: ClientWatch
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
            self.client.stop()
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


async def open_scope(request: Request[Any, Any, Any], lifecycle: Lifecycle, cache: ModelCache, spec: ModelSpec,
                     kind: ModelKind) -> RequestScope:
    first = lifecycle.begin()
    try:
        lease = await cache.lease(spec, kind)
    except BaseException:
        lifecycle.end()
        raise
    return RequestScope(lifecycle, lease, first, ClientWatch(request))


async def close_after(scope: RequestScope, body: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Stream `body`, then release the scope, however the stream ends (client gone included)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        scope.close()
        await body.aclose()
