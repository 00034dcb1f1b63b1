"""What a chat format's output parser produces: content, reasoning and tool calls, as deltas.

Every parser is one state machine fed the text as it is generated (`feed`, then `finish`); a whole
reply is parsed by feeding it at once, so streamed and non-streamed answers always agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import attrs


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


CallIds = Callable[[], str]


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON document, as OpenAI sends it


@attrs.frozen
class OutputDelta:
    """One step of parsed output: exactly one of its fields is set."""

    content: str = ""
    reasoning: str = ""
    tool_call: ToolCall | None = None


@attrs.frozen
class ParsedOutput:
    content: str
    reasoning_content: str | None
    tool_calls: tuple[ToolCall, ...]


class OutputParser(Protocol):
    def feed(self, text: str) -> list[OutputDelta]: ...
    def finish(self) -> list[OutputDelta]: ...


def merge_deltas(deltas: Collection[OutputDelta]) -> ParsedOutput:
    reasoning = "".join(delta.reasoning for delta in deltas)
    return ParsedOutput(
        content="".join(delta.content for delta in deltas),
        reasoning_content=reasoning or None,
        tool_calls=tuple(delta.tool_call for delta in deltas if delta.tool_call is not None),
    )


def parse_all(parser: OutputParser, text: str) -> ParsedOutput:
    return merge_deltas([*parser.feed(text), *parser.finish()])


def decode_call(call: Any, tool_names: Collection[str],
                arguments_keys: tuple[str, ...] = ("arguments",)) -> tuple[str, str] | None:
    """(name, arguments JSON) from a decoded call object, or None when it is not a call to an offered
    tool with a JSON object as arguments (given as an object, or as a string holding one)."""
    if not isinstance(call, Mapping) or call.get("name") not in tool_names:
        return None
    key = next((key for key in arguments_keys if key in call), None)
    arguments = call[key] if key is not None else {}
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            return None
        return (call["name"], arguments) if isinstance(decoded, dict) else None
    if not isinstance(arguments, dict):
        return None
    return call["name"], json.dumps(arguments, ensure_ascii=False)


class OneCallFilter:
    """`parallel_tool_calls: false`: only a reply's first tool call is kept (the grammar enforces it
    for forced calls; this is the same limit for calls a model makes on its own)."""

    def __init__(self, parser: OutputParser) -> None:
        self._parser, self._called = parser, False

    def feed(self, text: str) -> list[OutputDelta]:
        return self._keep(self._parser.feed(text))

    def finish(self) -> list[OutputDelta]:
        return self._keep(self._parser.finish())

    def _keep(self, deltas: list[OutputDelta]) -> list[OutputDelta]:
        kept = []
        for delta in deltas:
            if delta.tool_call is not None:
                if self._called:
                    continue
                self._called = True
            kept.append(delta)
        return kept
