"""Output with tags: `<think>…</think>` (reasoning) and `<tool_call>{"name": …, "arguments": …}</tool_call>`
blocks among the text, as Qwen3, Qwen2.5 and Hermes models write them.

`TaggedCallParser.feed` takes text as it is generated and returns deltas; tags split across tokens are
held back until they can be told apart from text, so markup never leaks into content. A tool call
whose JSON is malformed, or that names a function that was not offered, stays as text; a
`</tool_call>` inside one of its JSON strings is part of the arguments, not the end of the call. A
call cut off by the end of generation (`max_tokens`) is a call if its JSON is whole, else dropped:
its markup never becomes content.
Whitespace is trimmed only where it touches a tag (templates put newlines around every tag): a field's
leading whitespace after a tag, and trailing whitespace before one. A reply with no tags is passed
through exactly as generated, so its logprobs spell its content; whitespace between two pieces of
content separated by a think block or a call is kept.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection

from handler.formats.json_scan import JsonStrings
from handler.formats.output import CallIds, OutputDelta, ToolCall, decode_call, new_call_id

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class _Mode(enum.Enum):
    CONTENT = "content"
    THINK = "reasoning"
    TOOL_CALL = "tool_call"


def _partial_tag_length(text: str, tags: Collection[str]) -> int:
    """Length of the longest suffix of `text` that could be the start of one of `tags`."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


class TaggedCallParser:
    def __init__(self, tool_names: Collection[str] = (), *, in_think: bool = False,
                 new_id: CallIds = new_call_id) -> None:
        self._tool_names = frozenset(tool_names)
        self._new_id = new_id
        self._mode = _Mode.THINK if in_think else _Mode.CONTENT
        self._buffer = ""
        # Per field: trailing whitespace, emitted unless a tag follows it, and whether the field has had
        # text yet (until then its leading whitespace is dropped, when a tag comes before it).
        self._held_space = {"content": "", "reasoning": ""}
        self._started = {"content": False, "reasoning": False}
        self._after_tag = in_think  # a tag (here or in the prompt) came before the text now generated
        self._call_scan = _JsonStringScan()

    def feed(self, text: str) -> list[OutputDelta]:
        self._buffer += text
        deltas: list[OutputDelta] = []
        while self._step(deltas):
            pass
        return deltas

    def finish(self) -> list[OutputDelta]:
        """Flush what is left when generation ends (an unclosed think block is reasoning)."""
        deltas: list[OutputDelta] = []
        rest, self._buffer = self._buffer, ""
        if self._mode is _Mode.TOOL_CALL:
            self._close_tool_call(rest, deltas, closed=False)
            return deltas
        self._emit_text(rest, deltas)
        field = self._mode.value
        if held := self._held_space[field]:  # the reply ends in whitespace that touches no tag
            self._held_space[field] = ""
            deltas.append(OutputDelta(reasoning=held) if field == "reasoning" else OutputDelta(content=held))
        return deltas

    def _open_tags(self) -> tuple[str, ...]:
        if self._mode is _Mode.THINK:
            return (THINK_CLOSE,)
        # A stray </think> in content (the prompt opened the block but we were not told) is dropped.
        return (THINK_OPEN, THINK_CLOSE, CALL_OPEN) if self._tool_names else (THINK_OPEN, THINK_CLOSE)

    def _step(self, deltas: list[OutputDelta]) -> bool:
        """Consume the buffer up to the next tag; True when a tag was consumed and more may follow."""
        if self._mode is _Mode.TOOL_CALL:
            end = self._call_scan.find_outside_strings(self._buffer, CALL_CLOSE)
            if end < 0:
                return False
            body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_CLOSE):]
            self._close_tool_call(body, deltas)
            return True
        found = [(self._buffer.find(tag), tag) for tag in self._open_tags()]
        found = [(at, tag) for at, tag in found if at >= 0]
        if not found:
            keep = _partial_tag_length(self._buffer, self._open_tags())
            ready, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
            self._emit_text(ready, deltas)
            return False
        at, tag = min(found)
        self._emit_text(self._buffer[:at], deltas)
        self._buffer = self._buffer[at + len(tag):]
        if self._mode is _Mode.THINK:
            self._held_space["reasoning"], self._started["reasoning"] = "", False  # one think block ended
        else:
            self._held_space["content"] = ""  # whitespace before a tag; the text after it keeps its own
        self._after_tag = True
        self._mode = {THINK_OPEN: _Mode.THINK, THINK_CLOSE: _Mode.CONTENT, CALL_OPEN: _Mode.TOOL_CALL}[tag]
        if self._mode is _Mode.TOOL_CALL:
            self._call_scan = _JsonStringScan()
        return True

    def _close_tool_call(self, body: str, deltas: list[OutputDelta], *, closed: bool = True) -> None:
        self._mode = _Mode.CONTENT
        decoded = _decode_body(body.strip(), self._tool_names)
        if decoded is None:
            if closed:  # a whole block that is no call of ours: the model's text
                self._emit_text(CALL_OPEN + body + CALL_CLOSE, deltas)
            return  # cut off mid-call: neither a call nor content
        deltas.append(OutputDelta(tool_call=ToolCall(id=self._new_id(), name=decoded[0], arguments=decoded[1])))

    def _emit_text(self, text: str, deltas: list[OutputDelta]) -> None:
        field = "reasoning" if self._mode is _Mode.THINK else "content"
        if not self._started[field] and self._after_tag:
            text = text.lstrip()
        body = text.rstrip()
        if not body:
            self._held_space[field] += text
            return
        out = self._held_space[field] + body
        self._held_space[field], self._started[field] = text[len(body):], True
        deltas.append(OutputDelta(reasoning=out) if field == "reasoning" else OutputDelta(content=out))


def _decode_body(body: str, tool_names: Collection[str]) -> tuple[str, str] | None:
    try:
        return decode_call(json.loads(body), tool_names)
    except ValueError:
        return None


class _JsonStringScan:
    """Finds a closing tag in a tool call's JSON body, skipping JSON strings (whose text may contain
    the tag). Incremental: text already scanned is not scanned again as the body grows."""

    def __init__(self) -> None:
        self._position, self._strings = 0, JsonStrings()
        self._pending = False  # the character at `_position` was taken, and is maybe the tag's start

    def find_outside_strings(self, text: str, tag: str) -> int:
        while self._position < len(text):
            if not self._pending and not self._strings.structural(text[self._position]):
                self._position += 1
                continue
            if text.startswith(tag, self._position):
                return self._position
            if tag.startswith(text[self._position:]):
                self._pending = True
                return -1  # maybe the start of the tag: wait for more text
            self._pending = False
            self._position += 1
        return -1
