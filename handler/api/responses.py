"""POST /v1/responses (stateless): OpenAI's Responses API on the chat engine.

The request becomes a chat completion request (`responses_protocol`), runs exactly as chat does
(same checks, formats, queue, metrics), and its parsed reply becomes output items
(`responses_output`): a JSON response, or the official stream of events."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.chat_mapping import cut_short
from handler.api.chat_service import SSE_HEADERS, ChatService
from handler.api.dependencies import CacheDep, CatalogDep, LifecycleDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES, error_body
from handler.api.responses_output import Event, OutputItems
from handler.api.responses_protocol import ResponsesRequest, as_chat_request
from handler.api.serving import close_after
from handler.api.streams import merged
from handler.engine.chat import ChatEvent

_encoder = msgspec.json.Encoder()


class _Reply:
    """One response being built: its id, its output items, and the response object at any point."""

    def __init__(self, data: ResponsesRequest, model: str) -> None:
        self.data, self.model = data, model
        self.id, self.created = f"resp_{uuid.uuid4().hex}", int(time.time())
        self.items = OutputItems()
        self.final: ChatEvent | None = None

    def feed(self, event: ChatEvent) -> list[Event]:
        if event.finish_reason == "cancelled":
            raise cut_short()
        if event.finish_reason is not None:
            self.final = event
            return self.items.close("incomplete" if event.finish_reason == "length" else "completed")
        return self.items.add(event.delta) if event.delta is not None else []

    @property
    def status(self) -> str:
        if self.final is None:
            return "in_progress"
        return "incomplete" if self.final.finish_reason == "length" else "completed"

    def response(self) -> dict[str, Any]:
        data, usage = self.data, self.final.usage if self.final is not None else None
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": self.status,
            "model": self.model, "output": self.items.output if self.final is not None else [], "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if self.status == "incomplete" else None,
            "instructions": data.instructions, "tools": data.tools or [], "tool_choice": data.tool_choice or "auto",
            "parallel_tool_calls": data.parallel_tool_calls is not False, "temperature": data.temperature,
            "top_p": data.top_p, "max_output_tokens": data.max_output_tokens,
            "text": msgspec.to_builtins(data.text) if data.text and data.text.format else {"format": {"type": "text"}},
            "reasoning": msgspec.to_builtins(data.reasoning), "store": False,
            "metadata": data.metadata or {}, "previous_response_id": None,
            "usage": None if usage is None else {
                "input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
                "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens},
        }


async def _collect(reply: _Reply, events: AsyncIterator[tuple[int, ChatEvent]]) -> dict[str, Any]:
    async for _, event in events:
        reply.feed(event)
    if reply.final is None:
        raise cut_short()
    return reply.response()


def _sse(event: Event, sequence: int) -> bytes:
    numbered = {**event, "sequence_number": sequence}
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + _encoder.encode(numbered) + b"\n\n"


async def _stream(reply: _Reply, events: AsyncIterator[tuple[int, ChatEvent]]) -> AsyncGenerator[bytes, None]:
    sequence = 0

    def frames(batch: list[Event]) -> bytes:
        nonlocal sequence
        out = b"".join(_sse(event, sequence + offset) for offset, event in enumerate(batch))
        sequence += len(batch)
        return out

    yield frames([{"type": "response.created", "response": reply.response()},
                  {"type": "response.in_progress", "response": reply.response()}])
    try:
        async for _, event in events:
            if batch := reply.feed(event):
                yield frames(batch)
        if reply.final is None:
            raise cut_short()
        kind = "response.incomplete" if reply.status == "incomplete" else "response.completed"
        yield frames([{"type": kind, "response": reply.response()}])
    except Exception as exc:  # headers are sent: report in-band
        error = error_body(exc)[1].error
        yield frames([{"type": "error", "code": error.code, "message": error.message, "param": error.param}])


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["responses"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a model response (OpenAI's Responses API, stateless; `stream: true` for events)")
    async def create(self, data: JSONBody[ResponsesRequest], request: Request[Any, Any, Any], catalog: CatalogDep,
                     cache: CacheDep, settings: SettingsDep, lifecycle: LifecycleDep) -> Response[Any] | Stream:
        chat = as_chat_request(data)
        scope, started = await ChatService(catalog, cache, settings, lifecycle).begin(chat, request)
        reply = _Reply(data, scope.model)
        events = scope.observe_chat(merged([started[0].events()]))
        if data.stream:
            return Stream(close_after(scope, _stream(reply, events)), media_type="text/event-stream",
                          headers={**SSE_HEADERS, **scope.headers()})
        try:
            return Response(await scope.client.unless_gone(_collect(reply, events)), headers=scope.headers())
        finally:
            scope.close()
