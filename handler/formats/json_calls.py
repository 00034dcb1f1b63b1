"""Tool calls written as bare JSON objects among the text: `{"name": …, "arguments": {…}}` (or
`"parameters"`, as Llama 3.x writes them), possibly after a marker token such as `<|python_tag|>`.

Text streams as content until a `{` that opens a JSON object (`{` then `"`); from there it is held
back until the object closes. A closed object that calls an offered tool becomes a tool call (with
the code fence or separator around it dropped); anything else was content after all and is released.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from handler.formats.json_scan import JsonValueScan
from handler.formats.output import CallIds, OutputDelta, ToolCall, decode_call, new_call_id

MAX_HELD_OBJECT = 65_536  # characters: an object longer than this is content, not a call
# What may sit between text and a call (a code fence opening, or the start of one), held back until
# it is known whether a call follows: then it is dropped, else it is content after all.
_HELD_TAIL = re.compile(r"(?:\s*`{1,3}(?:j(?:s(?:on?)?)?)?)?\s*$")
_AFTER_CALL = re.compile(r"^\s*(?:```|[;,\]])?")  # what may close a call


class JsonCallParser:
    def __init__(self, tool_names: Collection[str], *, arguments_keys: tuple[str, ...] = ("arguments", "parameters"),
                 markers: tuple[str, ...] = (), new_id: CallIds = new_call_id) -> None:
        self._tool_names, self._keys = frozenset(tool_names), arguments_keys
        self._markers, self._new_id = markers, new_id
        self._buffer, self._held = "", ""
        self._started, self._after_call = False, False
        self._scan: JsonValueScan | None = None  # set while a `{` is held back

    def feed(self, text: str) -> list[OutputDelta]:
        self._buffer += text
        deltas: list[OutputDelta] = []
        while self._step(deltas, final=False):
            pass
        return deltas

    def finish(self) -> list[OutputDelta]:
        deltas: list[OutputDelta] = []
        while self._step(deltas, final=True):
            pass
        self._emit(self._buffer, deltas)
        self._buffer, held = "", self._held.rstrip()
        if held.strip():  # a fence (or backticks) that no call followed: content
            deltas.append(OutputDelta(content=held))
        return deltas

    def _step(self, deltas: list[OutputDelta], *, final: bool) -> bool:
        if self._scan is not None:
            return self._close_object(deltas, final=final)
        if self._after_call:
            if not final and len(self._buffer.lstrip()) < 3:
                return False  # maybe the start of a closing fence
            self._buffer = self._buffer[_AFTER_CALL.match(self._buffer).end():]  # type: ignore[union-attr]
            self._after_call = False
        for marker in self._markers:
            self._buffer = self._buffer.replace(marker, "")
        start = self._object_start() if self._tool_names else -1
        if start < 0:
            keep = 0 if final else self._undecided_tail()
            self._emit(self._buffer[: len(self._buffer) - keep], deltas)
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return False
        self._emit(self._buffer[:start], deltas)
        self._buffer, self._scan = self._buffer[start:], JsonValueScan()
        return True

    def _object_start(self) -> int:
        """Where the first `{` that may open a JSON object is (-1: none yet, or too early to tell)."""
        for match in re.finditer(r"\{", self._buffer):
            after = self._buffer[match.end():].lstrip()
            if not after:
                return -1  # the last thing written: `_undecided_tail` holds it until we can tell
            if after[0] in '"}':
                return match.start()
        return -1

    def _undecided_tail(self) -> int:
        """How much of the buffer's end must wait: a `{` not yet followed by text, or a partial marker."""
        stripped = self._buffer.rstrip()
        if self._tool_names and stripped.endswith("{"):
            return len(self._buffer) - len(stripped) + 1
        for marker in self._markers:
            for size in range(min(len(marker) - 1, len(self._buffer)), 0, -1):
                if self._buffer.endswith(marker[:size]):
                    return size
        return 0

    def _close_object(self, deltas: list[OutputDelta], *, final: bool) -> bool:
        assert self._scan is not None
        end = self._scan.end(self._buffer)
        if end < 0 and not final and len(self._buffer) <= MAX_HELD_OBJECT:
            return False
        self._scan = None
        if end < 0:  # never closed, or too long to be a call: content
            self._emit(self._buffer[:1], deltas)
            self._buffer = self._buffer[1:]
            return True
        text, self._buffer = self._buffer[:end], self._buffer[end:]
        try:
            call = decode_call(json.loads(text), self._tool_names, self._keys)
        except ValueError:
            call = None
        if call is None:
            self._emit(text, deltas)
            return True
        self._held, self._after_call = "", True
        deltas.append(OutputDelta(tool_call=ToolCall(id=self._new_id(), name=call[0], arguments=call[1])))
        return True

    def _emit(self, text: str, deltas: list[OutputDelta]) -> None:
        """Content, less whitespace at its start and a tail (spaces, a code fence) that is only
        emitted once more content follows."""
        text, self._held = self._held + text, ""
        if not self._started:
            text = text.lstrip()
        tail = _HELD_TAIL.search(text)
        assert tail is not None  # the pattern matches the empty string at the end
        body, self._held = text[: tail.start()], text[tail.start():]
        if body:
            deltas.append(OutputDelta(content=body))
            self._started = True
