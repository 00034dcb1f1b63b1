"""One model call: the lifetime every model route's request has, written once.

A route opens a call (`async with calls.open(request, body.model, kind, route) as call`), which finds
the model, checks its kind, admits the request while the server is not draining, leases the model
(loading it if needed), watches the client and scopes the request's metrics and log line; the route
starts its replies on the engine and hands them to `call.answer` with the shaper of its wire format,
which answers as JSON or as a stream. Usage, headers, the first-token time and the outcome metric are
computed here for every route; a stream takes the call over and closes it when it ends, however it
ends. This is the one place that knows a request's lifetime: shapers only turn events into a format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import attrs
from litestar import Request, Response
from litestar.response import Stream

from handler.api import metrics
from handler.api.auth import request_tenant
from handler.api.request_log import request_summary
from handler.engine.batching import BatchingChatModel
from handler.engine.cache import Lease, ModelCache
from handler.engine.chat import ChatEvent
from handler.engine.embedding import EmbeddingModel
from handler.engine.generation import Generation
from handler.engine.types import Usage
from handler.errors import InvalidRequest, ServiceUnavailable
from handler.lifecycle import Lifecycle
from handler.store.catalog import ModelCatalog
from handler.store.manifest import ModelKind, ModelSpec

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_WRONG_KIND = {"chat": "an embedding model; use /v1/embeddings", "embedding": "a chat model; use /v1/chat/completions"}
_END = object()


def cut_short() -> ServiceUnavailable:
    """A generation the server stopped (shutdown past DRAIN_TIMEOUT_S, or the model unloaded)."""
    return ServiceUnavailable("the reply was cut short: the server stopped this generation (shutting down or "
                              "unloading the model); retry the request", code="model_unloaded", retry_after_s=1)


class Started(Protocol):
    """A reply the engine started: its generation (slot, cached and restored tokens) and its events."""

    generation: Generation

    def events(self) -> AsyncIterator[ChatEvent]: ...


class Shaper(Protocol):
    """One wire format: a call's replies in, that format's JSON body or stream frames out."""

    end_frame: bytes  # what closes a stream (OpenAI's `data: [DONE]`), after an error frame too

    async def body(self, replies: Replies) -> Any: ...

    def frames(self, replies: Replies) -> AsyncIterator[bytes]: ...

    def error_frame(self, exc: Exception) -> bytes:
        """An error once the response has started: reported in-band, in the format's own shape."""


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


async def merged(sources: Sequence[AsyncIterator[T]]) -> AsyncGenerator[tuple[int, T], None]:
    """Items of every source as they come, tagged with their source's index (n choices of a request
    run as n generations; their replies interleave here); an error in one ends the whole."""
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                queue.put_nowait((index, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            queue.put_nowait((index, exc))
        queue.put_nowait((index, _END))

    tasks = [asyncio.ensure_future(pump(index, source)) for index, source in enumerate(sources)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@attrs.define
class Replies:
    """Every reply of one call (each choice of each prompt, `per_prompt` choices a prompt), read once
    by the shaper: observed for the first token and the outcome, summed into the request's usage."""

    call: ModelCall
    generations: Sequence[Generation]  # every reply's: each prompt's choices, prompt by prompt
    _events: AsyncIterator[tuple[int, ChatEvent]]
    per_prompt: int = 1
    finals: dict[int, ChatEvent] = attrs.field(factory=dict)
    _first_seen: bool = False

    @property
    def count(self) -> int:
        return len(self.generations)

    @property
    def readers(self) -> Sequence[Generation]:
        """Each prompt's first choice, which reads (or reuses) its prompt."""
        return self.generations[::self.per_prompt]

    async def __aiter__(self) -> AsyncIterator[tuple[int, ChatEvent]]:
        async for index, event in self._events:
            if event.delta is not None and not self._first_seen:
                self._first_seen = True
                sampled = [each.first_token_at for each in self.generations if each.first_token_at is not None]
                self.call.first_token(min(sampled, default=None))
            if event.finish_reason == "cancelled":
                raise cut_short()  # never a bare end of stream: the client must see the reply is incomplete
            if event.finish_reason is not None:
                self.finals[index] = event
            yield index, event
        usage = self.usage()
        self.call.finished(self.finals[0].finish_reason or "stop", usage)

    def prompt_usage(self) -> Usage:
        """What is known once the replies started: the prompts' tokens, and how many were reused."""
        return Usage(sum(reader.prompt_tokens for reader in self.readers),
                     cached_tokens=sum(reader.cached_tokens for reader in self.readers))

    def usage(self) -> Usage:
        """The request's usage once every reply ended: each prompt read once (by its first choice,
        whose reuse is the prompt's), every choice's tokens counted; else the reply was cut short."""
        if len(self.finals) != self.count or any(event.usage is None for event in self.finals.values()):
            raise cut_short()
        readers = [self.finals[index].usage for index in range(0, self.count, self.per_prompt)]
        completion = sum(event.usage.completion_tokens for event in self.finals.values() if event.usage)
        return Usage(sum(usage.prompt_tokens for usage in readers if usage), completion,
                     cached_tokens=sum(usage.cached_tokens for usage in readers if usage))


@attrs.define
class ModelCall:
    """One open model request: its lease, its client, and what it observes (cold start, prefix
    restored, first token, outcome), which become its headers, metrics and log line."""

    spec: ModelSpec
    route: str  # the `endpoint` label of its metrics
    lease: Lease
    lifecycle: Lifecycle
    client: ClientWatch
    first_request: bool
    began: float
    log_line: dict[str, Any]  # this request's log line (the request log middleware writes it out)
    tenant: str = ""  # whose prompts these are (see `auth.tenant_of`)
    handed_over: bool = False  # a stream holds the call and closes it when it ends
    _closed: bool = False

    def __attrs_post_init__(self) -> None:
        self.log_line["model"] = self.model
        if (cold := self.lease.cold_start) is not None:
            self.log_line.update(sync_ms=round(cold.sync_seconds * 1000), load_ms=round(cold.load_seconds * 1000))
            metrics.record_cold_start(cold, self.model)

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def chat_model(self) -> BatchingChatModel:
        return self.lease.chat_model

    @property
    def embedding_model(self) -> EmbeddingModel:
        return self.lease.embedding_model

    async def unless_gone(self, work: Awaitable[T]) -> T:
        """`work`, given up if the client leaves first (a request waiting for a slot leaves the line)."""
        return await self.client.unless_gone(work)

    def headers(self) -> dict[str, str]:
        """The same on every model route: first request, restored prefix, cold start timings."""
        headers = {"x-first-request": "true"} if self.first_request else {}
        if restored := self.log_line.get("prefix_from_volume"):
            headers["x-prefix-from-volume"] = str(restored)  # prompt tokens whose KV state was restored
            headers["x-prefix-source"] = self.log_line["prefix_source"]  # ram, volume or s3
        if "sync_ms" in self.log_line:
            sync_ms, load_ms = self.log_line["sync_ms"], self.log_line["load_ms"]
            headers["x-cold-start"] = f"sync={sync_ms}ms;load={load_ms}ms"
            headers["Server-Timing"] = f"sync;dur={sync_ms}, load;dur={load_ms}"
        return headers

    def respond(self, body: Any) -> Response[Any]:
        """A JSON answer made without generating (embeddings, token counts), with the call's headers."""
        return Response(body, headers=self.headers())

    async def answer(self, started: Sequence[Started], shaper: Shaper, *, stream: bool,
                     per_prompt: int = 1) -> Response[Any] | Stream:
        """The started replies, shaped: a JSON body once all end, or a stream of frames."""
        generations = [reply.generation for reply in started]
        replies = Replies(self, generations, merged([reply.events() for reply in started]), per_prompt)
        self._prefix_restored(sum(reader.restored_tokens for reader in replies.readers),
                              {reader.restored_from for reader in replies.readers if reader.restored_tokens})
        if stream:
            self.handed_over = True
            return Stream(self._stream(shaper, replies), media_type="text/event-stream",
                          headers={**SSE_HEADERS, **self.headers()})
        for generation in generations:
            generation.read_whole()
        return Response(await self.unless_gone(shaper.body(replies)), headers=self.headers())

    async def _stream(self, shaper: Shaper, replies: Replies) -> AsyncGenerator[bytes, None]:
        frames = shaper.frames(replies)
        try:
            async for frame in frames:
                yield frame
            yield shaper.end_frame
        except Exception as exc:  # noqa: BLE001 - headers are sent: reported in-band, then the stream ends
            yield shaper.error_frame(exc) + shaper.end_frame
        finally:
            self.close()
            await frames.aclose()  # type: ignore[attr-defined]

    def _prefix_restored(self, tokens: int, sources: set[str]) -> None:
        if tokens:
            source = ",".join(sorted(sources))
            self.log_line.update(prefix_from_volume=tokens, prefix_source=source)
            for each in sources:
                metrics.PREFIXES_RESTORED.labels(self.model, each).inc()

    def first_token(self, at: float | None = None) -> None:
        """The call's first token (once, from its `Replies`). `at`: when the engine sampled it
        (perf_counter), since a whole reply reaches the loop only at its end."""
        seconds = (time.perf_counter() if at is None else at) - self.began
        self.log_line["ttft_ms"] = round(seconds * 1000)
        metrics.TIME_TO_FIRST_TOKEN.labels(self.model).observe(seconds)

    def finished(self, reason: str, usage: Usage) -> None:
        metrics.record_outcome(self.model, self.route, reason, usage.prompt_tokens, usage.completion_tokens)
        self.log_line.update(finish_reason=reason, prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.stop()
            self.lease.release()
            self.lifecycle.end()


@attrs.frozen
class ModelCalls:
    """Opens model calls: the routes' one dependency for anything that uses a model."""

    catalog: ModelCatalog
    cache: ModelCache
    lifecycle: Lifecycle

    @asynccontextmanager
    async def open(self, request: Request[Any, Any, Any], model: str, kind: ModelKind | None,
                   route: str) -> AsyncIterator[ModelCall]:
        """The call for `model` (of `kind`, or any kind when None), closed on leaving the block unless
        a stream took it over."""
        spec = await self.catalog.find(model)
        if kind is not None and spec.kind != kind:  # before anything loads
            raise InvalidRequest(f"'{spec.name}' is {_WRONG_KIND[kind]}", param="model", code=f"model_not_{kind}")
        began, first = time.perf_counter(), self.lifecycle.begin()
        try:
            lease = await self.cache.lease(spec)
        except BaseException:
            self.lifecycle.end()
            raise
        state = request.scope.get("state")
        call = ModelCall(spec, route, lease, self.lifecycle, ClientWatch(request), first, began,
                         request_summary(state), tenant=request_tenant(state))
        try:
            yield call
        finally:
            if not call.handed_over:
                call.close()
