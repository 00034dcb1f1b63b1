"""Each family's parser on recorded model outputs, whole and streamed in pieces of every size: the
streamed deltas must add up to the same result, and markup never reaches content."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.formats.json_calls import JsonCallParser
from handler.formats.mistral_calls import MistralCallParser
from handler.formats.output import OneCallFilter, ParsedOutput, ToolCall, merge_deltas, parse_all
from handler.formats.tagged_calls import TaggedCallParser

TOOLS = ("get_weather", "get_time")
PARIS = ("get_weather", '{"city": "Paris"}')
UTC = ("get_time", '{"timezone": "UTC"}')


def _ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


PARSERS = {
    "hermes": lambda: TaggedCallParser(TOOLS, new_id=_ids()),
    "llama3": lambda: JsonCallParser(TOOLS, markers=("<|python_tag|>",), new_id=_ids()),
    "mistral": lambda: MistralCallParser(TOOLS, new_id=_ids()),
    "generic": lambda: JsonCallParser(TOOLS, new_id=_ids()),
}

# (family, recorded output, expected content, expected calls)
RECORDED = [
    ("hermes", 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "Let me check.", [PARIS]),
    ("hermes", '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>\n<tool_call>\n'
               '{"name": "get_time", "arguments": {"timezone": "UTC"}}\n</tool_call>', "", [PARIS, UTC]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
               '{"name": "get_time", "parameters": {"timezone": "UTC"}}', "", [PARIS, UTC]),
    ("llama3", "It is sunny in Paris today.", "It is sunny in Paris today.", []),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>', "<|eom_id|>", [PARIS]),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]', "", [PARIS]),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "get_time", "arguments": {"timezone": "UTC"}}]', "", [PARIS, UTC]),
    ("mistral", 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "Sure.", [PARIS]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"timezone": "UTC"}',
     "", [PARIS, UTC]),
    ("mistral", '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}', "", [PARIS]),
    ("mistral", 'Use [brackets] freely.', "Use [brackets] freely.", []),
    ("mistral", '[TOOL_CALLS][{"name": "rm_rf", "arguments": {}}]', '[TOOL_CALLS][{"name": "rm_rf", "arguments": {}}]',
     []),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"ci', '[TOOL_CALLS][{"name": "get_weather", '
                '"arguments": {"ci', []),
    ("generic", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "", [PARIS]),
    ("generic", 'I will look it up.\n\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
     "I will look it up.", [PARIS]),
    ("generic", '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', "", [PARIS]),
    ("generic", 'In C, write `if (x) { return 1; }` and {"a": 1} is JSON.',
     'In C, write `if (x) { return 1; }` and {"a": 1} is JSON.', []),
    ("generic", '{"name": "rm_rf", "arguments": {}} no', '{"name": "rm_rf", "arguments": {}} no', []),
    ("generic", 'a {"name": "get_weather", "arguments": {"city": "}"}}', "a", [("get_weather", '{"city": "}"}')]),
    ("generic", 'unclosed {"name": "get_weather", "arguments": {', 'unclosed {"name": "get_weather", "arguments": {',
     []),
    ("generic", "", "", []),
]


def _expected(content: str, calls) -> ParsedOutput:
    return ParsedOutput(content=content, reasoning_content=None,
                        tool_calls=tuple(ToolCall(id=f"call_{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)))


def _streamed(family: str, text: str, sizes) -> ParsedOutput:
    parser, deltas, position = PARSERS[family](), [], 0
    for size in sizes:
        deltas += parser.feed(text[position:position + size])
        position += size
    deltas += parser.feed(text[position:]) + parser.finish()
    for delta in deltas:
        assert sum(bool(value) for value in (delta.content, delta.reasoning, delta.tool_call)) == 1
    return merge_deltas(deltas)


@pytest.mark.parametrize(("family", "text", "content", "calls"), RECORDED)
def test_recorded_output_whole(family, text, content, calls):
    assert parse_all(PARSERS[family](), text) == _expected(content, calls)


@pytest.mark.parametrize(("family", "text", "content", "calls"), RECORDED)
@pytest.mark.parametrize("chunking", ["chars", "triples", "random"])
def test_recorded_output_streamed(family, text, content, calls, chunking):
    sizes = {"chars": [1] * len(text), "triples": [3] * len(text),
             "random": [random.Random(len(text)).randint(1, 9) for _ in text]}[chunking]
    assert _streamed(family, text, sizes) == _expected(content, calls)


def test_content_streams_before_the_reply_ends():
    parser = JsonCallParser(TOOLS)
    assert [delta.content for delta in parser.feed("The answer is ")] == ["The answer is"]
    assert parser.feed('{"name": "get_time", ') == []  # held: may be a call
    (call,) = parser.feed('"arguments": {}}')
    assert call.tool_call is not None and call.tool_call.name == "get_time"


def test_a_brace_that_cannot_open_an_object_is_content_at_once():
    parser = JsonCallParser(TOOLS)
    assert merge_deltas(parser.feed("code { x }")).content == "code { x }"


def test_without_tools_json_is_content():
    text = '{"name": "get_weather", "arguments": {}}'
    assert parse_all(JsonCallParser(()), text).content == text
    assert parse_all(MistralCallParser((), new_id=_ids()), "[TOOL_CALLS]" + text).tool_calls == ()


def test_one_call_filter_keeps_the_first():
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}'
    parsed = parse_all(OneCallFilter(JsonCallParser(TOOLS, new_id=_ids())), text)
    assert [call.name for call in parsed.tool_calls] == ["get_weather"]


PIECES = ['{"name": "get_time", "arguments": {}}', "[TOOL_CALLS]", "get_weather[ARGS]", '{"city": "P"}', "{", "}",
          '"', "[", "]", "```json\n", "```", "\n", " ", "text", "<|python_tag|>", ";", "\\"]


@settings(max_examples=300, deadline=None)
@given(family=st.sampled_from(sorted(PARSERS)), pieces=st.lists(st.sampled_from(PIECES), max_size=16),
       cut=st.lists(st.integers(min_value=1, max_value=9), max_size=40))
def test_any_text_never_raises_and_stream_equals_whole(family, pieces, cut):
    text = "".join(pieces)
    assert _streamed(family, text, cut) == parse_all(PARSERS[family](), text)
