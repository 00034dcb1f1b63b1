"""Replies → Anthropic Messages objects: a `message`, or the official event sequence (message_start,
content_block_start / _delta / _stop per block, message_delta with the stop reason and usage,
message_stop). One machine for both modes: a non-streamed message is what the events add up to.

Reasoning becomes thinking blocks (with an empty signature: nothing here verifies one), tool calls
tool_use blocks; prompt tokens reused from an earlier request count as cache reads, as Anthropic
counts them (input_tokens + cache_read_input_tokens is the prompt)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import msgspec

from handler.api.answers.sse import named_event
from handler.api.calls import Replies
from handler.api.errors import anthropic_error_body
from handler.engine.chat import ChatEvent
from handler.engine.types import Usage
from handler.formats.output import OutputDelta, ToolCall

Event = dict[str, Any]
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "cache_creation_input_tokens": 0}


def _input(call: ToolCall) -> Any:
    try:
        return msgspec.json.decode(call.arguments)
    except msgspec.DecodeError:  # the format's parser only passes whole JSON: never expected
        return {}


def stop_reason(event: ChatEvent) -> str:
    if event.finish_reason == "stop":
        return "stop_sequence" if event.stop_sequence is not None else "end_turn"
    return _STOP_REASONS.get(str(event.finish_reason), "end_turn")


@attrs.define
class MessageShaper:
    model: str
    id: str = attrs.field(factory=lambda: f"msg_{uuid.uuid4().hex}")
    content: list[dict[str, Any]] = attrs.field(factory=list)
    _open: str | None = None  # the type of the text or thinking block being written
    end_frame = b""

    def message(self, final: ChatEvent | None, usage: Usage) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": self.content if final is not None else [],
                "stop_reason": stop_reason(final) if final is not None else None,
                "stop_sequence": final.stop_sequence if final is not None else None, "usage": _usage(usage)}

    def _feed(self, delta: OutputDelta) -> list[Event]:
        if delta.tool_call is not None:
            return [*self._close(), *self._tool_use(delta.tool_call)]
        if delta.reasoning:
            return self._write("thinking", delta.reasoning)
        return self._write("text", delta.content) if delta.content else []

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": len(self.content) - 1}]

    def _write(self, kind: str, text: str) -> list[Event]:
        events = [] if self._open == kind else self._close()
        if self._open != kind:
            block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                          "signature": ""}
            self.content.append(block)
            self._open = kind
            events.append({"type": "content_block_start", "index": len(self.content) - 1, "content_block": dict(block)})
        self.content[-1][kind] += text
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta", "thinking": text}
        events.append({"type": "content_block_delta", "index": len(self.content) - 1, "delta": delta})
        return events

    def _tool_use(self, call: ToolCall) -> list[Event]:
        self.content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)})
        index = len(self.content) - 1
        start = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        return [{"type": "content_block_start", "index": index, "content_block": start},
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": call.arguments}},
                {"type": "content_block_stop", "index": index}]

    async def body(self, replies: Replies) -> dict[str, Any]:
        async for _, event in replies:
            if event.delta is not None:
                self._feed(event.delta)
        self._close()
        return self.message(replies.finals[0], replies.usage())

    async def frames(self, replies: Replies) -> AsyncGenerator[bytes, None]:
        yield (named_event("message_start", {"type": "message_start",
                                             "message": self.message(None, replies.prompt_usage())})
               + named_event("ping", {"type": "ping"}))
        async for _, event in replies:
            if event.delta is not None and (batch := self._feed(event.delta)):
                yield b"".join(named_event(item["type"], item) for item in batch)
        final, usage = replies.finals[0], replies.usage()
        ending = [*self._close(),
                  {"type": "message_delta", "delta": {"stop_reason": stop_reason(final),
                                                      "stop_sequence": final.stop_sequence},
                   "usage": _usage(usage)},
                  {"type": "message_stop"}]
        yield b"".join(named_event(item["type"], item) for item in ending)

    def error_frame(self, exc: Exception) -> bytes:
        return named_event("error", anthropic_error_body(exc)[1])
