"""Every parsing case, in non-stream and stream mode: the streamed deltas must add up to the same result."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.formats.output import ParsedOutput, ToolCall, merge_deltas
from handler.formats.qwen3 import parse_output
from handler.formats.tagged_calls import TaggedCallParser

TOOLS = ["get_weather", "get_time"]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'

# (name, text, in_think, expected content, expected reasoning, expected calls as (name, arguments))
CASES = [
    ("plain", "Hello there!", False, "Hello there!", None, []),
    ("close tag inside a JSON string",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "a</tool_call>b"}}\n</tool_call>', False, "", None,
     [("get_weather", '{"city": "a</tool_call>b"}')]),
    ("escaped quote before a close tag in a string",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "\\"</tool_call>"}}\n</tool_call> ok', False, "ok",
     None, [("get_weather", '{"city": "\\"</tool_call>"}')]),
    ("space around a think block", "a <think>b</think> c", False, "a c", "b", []),
    ("newlines around a think block", "a\n<think>\nb\n</think>\n\nc", False, "a\n\nc", "b", []),
    ("empty", "", False, "", None, []),
    ("think then answer", "<think>\nLet me see.\n</think>\n\nSunny.", False, "Sunny.", "Let me see.", []),
    ("empty think", "<think>\n\n</think>\n\nHi", False, "Hi", None, []),
    ("prompt opened think", "reasoning here\n</think>\n\nAnswer", True, "Answer", "reasoning here", []),
    ("unclosed think", "<think>\nstill thinking", False, "", "still thinking", []),
    ("one call", CALL, False, "", None, [("get_weather", '{"city": "Paris"}')]),
    ("two calls", CALL + "\n" + TIME_CALL, False, "", None, [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]),
    ("text around calls", "Let me check.\n" + CALL + "\nDone.", False, "Let me check.\nDone.", None,
     [("get_weather", '{"city": "Paris"}')]),
    ("think and call", "<think>\nneed weather\n</think>\n\n" + CALL, False, "", "need weather",
     [("get_weather", '{"city": "Paris"}')]),
    ("malformed json", "<tool_call>\n{not json}\n</tool_call>", False, "<tool_call>\n{not json}\n</tool_call>", None, []),
    ("unknown function", '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>', False,
     '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>', None, []),
    ("arguments as string", '<tool_call>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}\n</tool_call>',
     False, "", None, [("get_time", '{"tz": "UTC"}')]),
    ("unclosed call", '<tool_call>\n{"name": "get_time", "arguments": {}}', False, "", None, [("get_time", "{}")]),
    ("unclosed broken call", "<tool_call>\n{\"name\": ", False, "", None, []),  # cut by max_tokens: no markup
    ("calls then one cut short", CALL + "\n" + TIME_CALL + '\n<tool_call>\n{"name": "get_weather", "argu', False, "",
     None, [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]),
    ("text then a cut call", "Checking.\n<tool_call>\n{", False, "Checking.", None, []),
    ("a plain reply keeps its whitespace", "\n Hello there!\n\n", False, "\n Hello there!\n\n", None, []),
    ("whitespace only", " \n", False, " \n", None, []),
    ("an answer ending in a newline", "<think>\nhm\n</think>\n\nSunny.\n", False, "Sunny.\n", "hm", []),
    ("non-ascii arguments", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call>', False,
     "", None, [("get_weather", '{"city": "東京"}')]),
    ("lookalike tags", "a < b and <thinking> is not a tag", False, "a < b and <thinking> is not a tag", None, []),
    ("tag at the very end", "text <think", False, "text <think", None, []),
]


def _ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def _expected(case) -> ParsedOutput:
    _, _, _, content, reasoning, calls = case
    return ParsedOutput(content=content, reasoning_content=reasoning,
                        tool_calls=tuple(ToolCall(id=f"call_{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)))


def _stream(text: str, sizes, *, in_think: bool, tools=TOOLS) -> ParsedOutput:
    parser, deltas, position = TaggedCallParser(tools, in_think=in_think, new_id=_ids()), [], 0
    for size in sizes:
        if position >= len(text):
            break
        deltas += parser.feed(text[position:position + size])
        position += size
    deltas += parser.feed(text[position:]) + parser.finish()
    for delta in deltas:
        assert sum(bool(value) for value in (delta.content, delta.reasoning, delta.tool_call)) == 1
        assert not any(tag in delta.content for tag in ("<think>", "</think>")) or "<tool_call>" in delta.content
    return merge_deltas(deltas)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_non_stream(case):
    assert parse_output(case[1], TOOLS, in_think=case[2], new_id=_ids()) == _expected(case)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("chunking", ["chars", "pairs", "random"])
def test_stream_equals_non_stream(case, chunking):
    text = case[1]
    sizes = {"chars": [1] * len(text), "pairs": [2] * len(text),
             "random": [random.Random(len(text)).randint(1, 7) for _ in text]}[chunking]
    assert _stream(text, sizes, in_think=case[2]) == _expected(case)


def test_tags_split_across_tokens_never_leak():
    parser = TaggedCallParser(TOOLS)
    leaked = [parser.feed(piece) for piece in ["Hi <", "tool", "_call>\n{\"name\": \"get_time\", ", '"arguments": {}}\n</tool_', "call>"]]
    contents = [delta.content for deltas in leaked for delta in deltas if delta.content]
    assert contents == ["Hi"]


def test_without_tools_tool_markup_is_content():
    assert parse_output(CALL).content == CALL


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(["<think>", "</think>", "<tool_call>", "</tool_call>", CALL, "\n", " ", "a",
                                        "<", "{", '"name"', "</", "x y"]), max_size=20),
       cut=st.lists(st.integers(min_value=1, max_value=9), max_size=40), in_think=st.booleans())
def test_random_text_never_raises_and_modes_agree(pieces, cut, in_think):
    text = "".join(pieces)
    expected = parse_output(text, TOOLS, in_think=in_think, new_id=_ids())
    assert _stream(text, cut, in_think=in_think) == expected
