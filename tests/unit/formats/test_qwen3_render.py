"""`render_prompt` against the official Qwen3 template (the oracle), byte for byte."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from handler.formats.content import content_text
from handler.formats.qwen3 import render_prompt
from tests.unit.formats.conversations import CONVERSATIONS, TIME, WEATHER, call, tool_reply

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>",
                  "</tool_response>", "<think>", "</think>"]


def _as_template_sees_it(messages):
    """What transformers would be given: content flattened to a string (as our API layer does)."""
    return [{**message, "content": content_text(message.get("content"))} for message in messages]


def _render_both(official_render, messages, tools, options):
    ours = render_prompt(messages, tools, **options)
    theirs = official_render(_as_template_sees_it(messages), tools, **options)
    return ours, theirs


def test_there_are_at_least_thirty_conversations():
    assert len(CONVERSATIONS) >= 30


@pytest.mark.parametrize(("messages", "tools", "options"), [case[1:] for case in CONVERSATIONS],
                         ids=[case[0] for case in CONVERSATIONS])
def test_matches_the_official_template(official_render, messages, tools, options):
    ours, theirs = _render_both(official_render, messages, tools, options)
    assert ours == theirs


@pytest.mark.parametrize(("messages", "tools", "options"), [case[1:] for case in CONVERSATIONS],
                         ids=[case[0] for case in CONVERSATIONS])
def test_special_tokens_are_single_tokens(qwen3_tokenizer_dir, messages, tools, options):
    tokenizer = Tokenizer.from_file(str(qwen3_tokenizer_dir / "tokenizer.json"))
    prompt = render_prompt(messages, tools, **options)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        assert token_id is not None
        assert ids.count(token_id) == prompt.count(token), token


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
arguments = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), text, st.booleans()), max_size=3)
user = st.builds(lambda content: {"role": "user", "content": content}, text)
system = st.builds(lambda content: {"role": "system", "content": content}, text)
tool = st.builds(tool_reply, text)
assistant = st.builds(
    lambda content, reasoning, calls, inline: {
        "role": "assistant",
        "content": f"<think>\n{reasoning}\n</think>\n\n{content}" if inline and reasoning is not None else content,
        **({"reasoning_content": reasoning} if reasoning is not None and not inline else {}),
        **({"tool_calls": calls} if calls else {}),
    },
    text, st.one_of(st.none(), text),
    st.lists(st.builds(lambda name, args, obj: call(name, args, as_object=obj),
                       st.sampled_from(["get_weather", "get_time"]), arguments, st.booleans()), max_size=2),
    st.booleans(),
)
conversation = st.tuples(st.one_of(st.none(), system), st.lists(st.one_of(user, assistant, tool), min_size=1, max_size=6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversation, tools=st.sampled_from([None, [WEATHER], [WEATHER, TIME]]),
       thinking=st.sampled_from([None, True, False]), add_generation_prompt=st.booleans())
def test_random_conversations_match(official_render, conversation, tools, thinking, add_generation_prompt):
    head, rest = conversation
    messages = ([head] if head else []) + rest
    options = {"enable_thinking": thinking, "add_generation_prompt": add_generation_prompt}
    ours, theirs = _render_both(official_render, messages, tools, options)
    assert ours == theirs, json.dumps(messages, ensure_ascii=False)


@pytest.mark.parametrize(("messages", "tools", "options"), [case[1:] for case in CONVERSATIONS],
                         ids=[case[0] for case in CONVERSATIONS])
def test_the_template_path_renders_qwen3_as_the_pure_renderer_does(qwen3_official_template, messages, tools,
                                                                   options):
    """`chat_format = "gguf"` on a Qwen3 GGUF: its own template, rendered by the Hermes format (sandbox,
    argument objects), gives the same prompt as the built-in renderer."""
    from handler.formats.chat_format import ChatInput, ToolUse
    from handler.formats.families import HermesFormat
    from handler.formats.registry import choose_format

    chosen = choose_format("gguf", qwen3_official_template)
    assert isinstance(chosen, HermesFormat)
    chat = ChatInput(messages, ToolUse(tuple(tools or ())), enable_thinking=options.get("enable_thinking"))
    if options.get("add_generation_prompt", True):
        assert chosen.render(chat) == render_prompt(messages, tools, **options)
