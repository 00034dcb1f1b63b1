"""Replies → OpenAI Responses objects: a `response`, or the official stream of events (numbered)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import msgspec

from handler.api.answers.response_items import Event, OutputItems
from handler.api.answers.sse import named_event
from handler.api.calls import Replies
from handler.api.errors import error_body
from handler.api.protocols.responses import ResponsesRequest
from handler.engine.chat import ChatEvent
from handler.engine.types import Usage


@attrs.define
class ResponseShaper:
    """One response being built: its id, its output items, and the response object at any point."""

    data: ResponsesRequest
    model: str
    id: str = attrs.field(factory=lambda: f"resp_{uuid.uuid4().hex}")
    created: int = attrs.field(factory=lambda: int(time.time()))
    items: OutputItems = attrs.field(factory=OutputItems)
    final: ChatEvent | None = None
    usage: Usage | None = None
    _sequence: int = 0
    end_frame = b""

    def _feed(self, event: ChatEvent) -> list[Event]:
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
        data, usage = self.data, self.usage
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

    async def body(self, replies: Replies) -> dict[str, Any]:
        async for _, event in replies:
            self._feed(event)
        self.usage = replies.usage()
        return self.response()

    def _frames(self, events: list[Event]) -> bytes:
        out = b"".join(named_event(str(event["type"]), {**event, "sequence_number": self._sequence + offset})
                       for offset, event in enumerate(events))
        self._sequence += len(events)
        return out

    async def frames(self, replies: Replies) -> AsyncGenerator[bytes, None]:
        yield self._frames([{"type": "response.created", "response": self.response()},
                            {"type": "response.in_progress", "response": self.response()}])
        async for _, event in replies:
            if batch := self._feed(event):
                yield self._frames(batch)
        self.usage = replies.usage()
        kind = "response.incomplete" if self.status == "incomplete" else "response.completed"
        yield self._frames([{"type": kind, "response": self.response()}])

    def error_frame(self, exc: Exception) -> bytes:
        error = error_body(exc)[1].error
        return self._frames([{"type": "error", "code": error.code, "message": error.message, "param": error.param}])
