"""What every model request does around its work: admission while not draining, a lease on the
model, cold-start timing headers, release when the response (or the stream) ends, and cancellation
when the client goes away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import attrs
from litestar import Request

from handler.api import metrics
from handler.api.auth import request_tenant
from handler.api.request_log import request_summary
from handler.engine.cache import Lease, ModelCache
from handler.engine.chat import ChatEvent
from handler.errors import InvalidRequest
from handler.lifecycle import Lifecycle
from handler.store.manifest import ModelKind, ModelSpec

T = TypeVar("T")
_WRONG_KIND = {"chat": "an embedding model; use /v1/embeddings", "embedding": "a chat model; use /v1/chat/completions"}


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
    """One model request, opened once by its route: the lease, the client watch, and everything the
    request observes (cold start, first token, how it finished), which become its response headers,
    its metrics and its log line, each computed once here."""

    lifecycle: Lifecycle
    lease: Lease
    first_request: bool
    client: ClientWatch
    model: str
    began: float
    log_line: dict[str, Any]  # this request's log line (the request log middleware writes it out)
    tenant: str = ""  # whose prompts these are (see `auth.tenant_of`)
    _closed: bool = False

    def __attrs_post_init__(self) -> None:
        self.log_line["model"] = self.model
        if (cold := self.lease.cold_start) is not None:
            self.log_line.update(sync_ms=round(cold.sync_seconds * 1000), load_ms=round(cold.load_seconds * 1000))
            metrics.record_cold_start(cold, self.model)

    def headers(self) -> dict[str, str]:
        """`x-cold-start` and `Server-Timing` when this request waited for a sync or a load."""
        headers = {"x-first-request": "true"} if self.first_request else {}
        if restored := self.log_line.get("prefix_from_volume"):
            headers["x-prefix-from-volume"] = str(restored)  # prompt tokens whose KV state was restored
        if "sync_ms" in self.log_line:
            sync_ms, load_ms = self.log_line["sync_ms"], self.log_line["load_ms"]
            headers["x-cold-start"] = f"sync={sync_ms}ms;load={load_ms}ms"
            headers["Server-Timing"] = f"sync;dur={sync_ms}, load;dur={load_ms}"
        return headers

    def prefix_from_volume(self, tokens: int) -> None:
        if tokens:
            self.log_line["prefix_from_volume"] = tokens
            metrics.PREFIXES_RESTORED.labels(self.model).inc()

    def first_token(self) -> None:
        seconds = time.perf_counter() - self.began
        self.log_line["ttft_ms"] = round(seconds * 1000)
        metrics.TIME_TO_FIRST_TOKEN.labels(self.model).observe(seconds)

    def finished(self, endpoint: str, reason: str, prompt_tokens: int, completion_tokens: int = 0) -> None:
        metrics.record_outcome(self.model, endpoint, reason, prompt_tokens, completion_tokens)
        self.log_line.update(finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    async def observe_chat(self, events: AsyncIterator[tuple[int, ChatEvent]]
                           ) -> AsyncGenerator[tuple[int, ChatEvent], None]:
        """Pass a chat's events (of every choice) through, observing its first token and how it finished."""
        waiting_for_first, finals = True, []
        async for index, event in events:
            if waiting_for_first and event.delta is not None:
                waiting_for_first = False
                self.first_token()
            if event.finish_reason is not None and event.usage is not None:
                finals.append(event)
            yield index, event
        if finals:  # the prompt is read once, whatever `n` is
            completion = sum(event.usage.completion_tokens for event in finals if event.usage is not None)
            first = finals[0]
            assert first.finish_reason is not None and first.usage is not None
            self.finished("chat", first.finish_reason, first.usage.prompt_tokens, completion)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.stop()
            self.lease.release()
            self.lifecycle.end()


async def open_scope(request: Request[Any, Any, Any], lifecycle: Lifecycle, cache: ModelCache, spec: ModelSpec,
                     kind: ModelKind) -> RequestScope:
    if spec.kind != kind:  # before anything loads
        raise InvalidRequest(f"'{spec.name}' is {_WRONG_KIND[kind]}", param="model", code=f"model_not_{kind}")
    began, first = time.perf_counter(), lifecycle.begin()
    try:
        lease = await cache.lease(spec)
    except BaseException:
        lifecycle.end()
        raise
    state = request.scope.get("state")
    return RequestScope(lifecycle, lease, first, ClientWatch(request), spec.name, began, request_summary(state),
                        tenant=request_tenant(state))


async def close_after(scope: RequestScope, body: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Stream `body`, then release the scope, however the stream ends (client gone included)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        scope.close()
        await body.aclose()
