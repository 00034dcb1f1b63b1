"""Mistral tool calls: content, then `[TOOL_CALLS]` followed by either a JSON array of call objects
(`[TOOL_CALLS][{"name": …, "arguments": {…}}]`, older templates) or, per call,
`[TOOL_CALLS]name[ARGS]{…}` (newer ones, optionally `name[CALL_ID]id[ARGS]{…}`)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from handler.formats.json_scan import JsonValueScan
from handler.formats.output import CallIds, OutputDelta, ToolCall, decode_call

CALLS_MARK, ARGS_MARK = "[TOOL_CALLS]", "[ARGS]"
_NAMED_CALL = re.compile(r"\s*([A-Za-z0-9_.:-]+)(?:\[CALL_ID\][A-Za-z0-9]*)?\[ARGS\]")


class MistralCallParser:
    def __init__(self, tool_names: Collection[str], *, new_id: CallIds) -> None:
        self._tool_names, self._new_id = frozenset(tool_names), new_id
        self._buffer, self._in_calls, self._started = "", False, False
        self._held = ""  # trailing whitespace of the content, emitted only if more content follows
        self._scan: JsonValueScan | None = None
        self._value_at = 0  # where the JSON value being scanned starts in the buffer
        self._name: str | None = None  # the function named before `[ARGS]`, in the newer syntax

    def feed(self, text: str) -> list[OutputDelta]:
        self._buffer += text
        deltas: list[OutputDelta] = []
        while self._step(deltas):
            pass
        return deltas

    def finish(self) -> list[OutputDelta]:
        deltas = self.feed("")
        rest, self._buffer = self._buffer, ""
        if self._in_calls:
            rest = CALLS_MARK + rest  # an unfinished call is shown as the text it is
        self._emit(rest.rstrip(), deltas)
        return deltas

    def _step(self, deltas: list[OutputDelta]) -> bool:
        if not self._in_calls:
            return self._read_content(deltas)
        if self._scan is None:
            stripped = self._buffer.lstrip()
            named = _NAMED_CALL.match(self._buffer)
            if stripped[:1] in ("[", "{"):
                self._value_at, self._name = len(self._buffer) - len(stripped), None
            elif named:
                self._value_at, self._name = named.end(), named.group(1)
            else:
                return False  # wait: the call's start is still being written
            self._scan = JsonValueScan()
        end = self._scan.end(self._buffer[self._value_at:])
        if end < 0:
            return False
        calls = self._decode(self._buffer[self._value_at: self._value_at + end], self._name)
        if calls is None:
            self._emit(CALLS_MARK + self._buffer[: self._value_at + end], deltas)
        deltas.extend(OutputDelta(tool_call=call) for call in calls or ())
        self._buffer, self._scan, self._in_calls = self._buffer[self._value_at + end:], None, False
        return True

    def _read_content(self, deltas: list[OutputDelta]) -> bool:
        at = self._buffer.find(CALLS_MARK)
        if at < 0:
            keep = next((size for size in range(len(CALLS_MARK) - 1, 0, -1)
                         if self._buffer.endswith(CALLS_MARK[:size])), 0)
            ready = self._buffer[: len(self._buffer) - keep]
            self._emit(ready, deltas)
            self._buffer = self._buffer[len(ready):]
            return False
        self._emit(self._buffer[:at], deltas)
        self._buffer, self._in_calls, self._held = self._buffer[at + len(CALLS_MARK):], True, ""
        return True

    def _decode(self, value: str, name: str | None) -> list[ToolCall] | None:
        try:
            decoded = json.loads(value)
        except ValueError:
            return None
        objects = [{"name": name, "arguments": decoded}] if name else decoded
        objects = objects if isinstance(objects, list) else [objects]
        calls = [decode_call(item, self._tool_names) for item in objects]
        if not calls or any(call is None for call in calls):
            return None
        return [ToolCall(id=self._new_id(), name=call[0], arguments=call[1]) for call in calls if call]

    def _emit(self, text: str, deltas: list[OutputDelta]) -> None:
        text = self._held + text
        if not self._started:
            text = text.lstrip()
        body = text.rstrip()
        self._held = text[len(body):]
        if body:
            self._started = True
            deltas.append(OutputDelta(content=body))
