"""A reply's parsed deltas → Responses output items (reasoning, message, function_call), and the
events that build them, in the official order. One machine for both modes: a non-streamed response
is what the stream's events add up to."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from handler.formats.output import OutputDelta, ToolCall

Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputItems:
    def __init__(self) -> None:
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the reasoning or message item being written
        self._text = ""

    def add(self, delta: OutputDelta) -> list[Event]:
        if delta.tool_call is not None:
            return [*self.close(), *self._call(delta.tool_call)]
        if delta.reasoning:
            return self._write("reasoning", delta.reasoning)
        return self._write("message", delta.content) if delta.content else []

    def close(self, status: str = "completed") -> list[Event]:
        """Finish the item being written (at the end of the reply, or when another kind starts)."""
        item, self._open = self._open, None
        if item is None:
            return []
        where = {"item_id": item["id"], "output_index": len(self.output) - 1, "content_index": 0}
        if item["type"] == "message":
            part = {"type": "output_text", "text": self._text, "annotations": [], "logprobs": []}
            item.update(content=[part], status=status)
            done = {"type": "response.output_text.done", **where, "text": self._text, "logprobs": []}
        else:
            part = {"type": "reasoning_text", "text": self._text}
            item.update(content=[part])
            done = {"type": "response.reasoning_text.done", **where, "text": self._text}
        finished = {"type": "response.output_item.done", "output_index": len(self.output) - 1,
                    "item": copy.deepcopy(item)}
        return [done, {"type": "response.content_part.done", **where, "part": part}, finished]

    def _write(self, kind: str, text: str) -> list[Event]:
        events = [] if self._open is not None and self._open["type"] == kind else [*self.close(), *self._start(kind)]
        self._text += text
        assert self._open is not None
        where = {"item_id": self._open["id"], "output_index": len(self.output) - 1, "content_index": 0}
        if kind == "message":
            events.append({"type": "response.output_text.delta", **where, "delta": text, "logprobs": []})
        else:
            events.append({"type": "response.reasoning_text.delta", **where, "delta": text})
        return events

    def _start(self, kind: str) -> list[Event]:
        if kind == "message":
            item = {"type": "message", "id": _id("msg"), "status": "in_progress", "role": "assistant", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            item = {"type": "reasoning", "id": _id("rs"), "summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        self.output.append(item)
        self._open, self._text = item, ""
        index = len(self.output) - 1
        return [{"type": "response.output_item.added", "output_index": index, "item": copy.deepcopy(item)},
                {"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "part": part}]

    def _call(self, call: ToolCall) -> list[Event]:
        item = {"type": "function_call", "id": _id("fc"), "call_id": call.id, "name": call.name, "arguments": "",
                "status": "in_progress"}
        self.output.append(item)
        index = len(self.output) - 1
        added = {"type": "response.output_item.added", "output_index": index, "item": copy.deepcopy(item)}
        item.update(arguments=call.arguments, status="completed")
        where = {"item_id": item["id"], "output_index": index}
        return [added, {"type": "response.function_call_arguments.delta", **where, "delta": call.arguments},
                {"type": "response.function_call_arguments.done", **where, "name": call.name,
                 "arguments": call.arguments},
                {"type": "response.output_item.done", "output_index": index, "item": copy.deepcopy(item)}]
