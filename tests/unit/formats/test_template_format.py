"""Formats rendered by a Jinja template: family detection, tools for templates that know none,
tool turns folded for templates that cannot show them, and each family's plan."""

from __future__ import annotations

import json

import pytest

from handler.formats.chat_format import ChatInput, ForcedCalls, JsonContent, ToolUse
from handler.formats.families import HermesFormat, Llama3Format, MistralFormat
from handler.formats.output import OneCallFilter
from handler.formats.qwen3 import Qwen3Format
from handler.formats.registry import choose_format
from handler.formats.template_format import TemplateFormat

PLAIN = ("{% for m in messages %}<|turn|>{{ m.role }}\n{{ m.content }}\n{% endfor %}"
         "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}")
# Alternation is enforced the way Gemma's and Mistral's templates do it.
STRICT = ("{% set turns = messages[1:] if messages[0].role == 'system' else messages %}"
          "{% for m in turns %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('roles must alternate') }}{% endif %}[{{ m.role }}]{{ m.content }}{% endfor %}")
WITH_TOOLS = ("{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}{% for m in messages %}{{ m.role }}: "
              "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
              "{{ c.function.arguments | tojson }} {{ c.id }}{% endfor %}{% else %}{{ m.content }}{% endif %}"
              "{% if m.role == 'tool' %} for {{ m.tool_call_id }}{% endif %}\n{% endfor %}")
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "Weather?"}]
CALLED = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
          {"role": "tool", "tool_call_id": "call_abc", "content": "21 C"}]


@pytest.mark.parametrize(("chat_format", "template", "custom", "expected"), [
    (None, None, None, Qwen3Format),
    (None, "<|im_start|>{{ x }}", None, Qwen3Format),
    (None, "<|im_start|><think><tool_call>", None, Qwen3Format),
    (None, "<|im_start|>{% if tools %}<tool_call>{% endif %}", None, HermesFormat),
    (None, "<|start_header_id|>{{ tools }}", None, Llama3Format),
    (None, "[INST]{% if tools %}[TOOL_CALLS]{% endif %}", None, MistralFormat),
    (None, PLAIN, None, TemplateFormat),
    ("gguf", "<|im_start|>{{ x }}", None, TemplateFormat),
    ("gguf", "<|im_start|><think><tool_call>", None, HermesFormat),
    ("qwen3", "<|start_header_id|>", None, Qwen3Format),
    ("llama3", PLAIN, None, Llama3Format),
    ("generic", "<tool_call>", None, TemplateFormat),
    (None, "<|im_start|>{{ x }}", PLAIN, TemplateFormat),  # a manifest template is always rendered
    (None, None, "<|start_header_id|>", Llama3Format),
])
def test_format_choice(chat_format, template, custom, expected):
    chosen = choose_format(chat_format, template, custom_template=custom)
    assert type(chosen) is expected
    if custom:
        assert chosen.template == custom


def test_tools_become_a_system_block_when_the_template_knows_none():
    prompt = TemplateFormat(PLAIN).render(ChatInput(ASK, ToolUse((WEATHER,))))
    assert prompt.startswith("<|turn|>system\nYou can call these functions")
    assert json.dumps(WEATHER["function"]) in prompt and '"arguments"' in prompt


def test_an_existing_system_message_keeps_its_text_before_the_block():
    messages = [{"role": "system", "content": "Be brief."}, *ASK]
    prompt = TemplateFormat(PLAIN).render(ChatInput(messages, ToolUse((WEATHER,))))
    assert prompt.startswith("<|turn|>system\nBe brief.\n\nYou can call these functions")
    assert prompt.count("<|turn|>system") == 1


def test_tool_turns_fold_into_alternating_plain_turns():
    history = [*CALLED, {"role": "tool", "tool_call_id": "call_def", "content": "sunny"}]
    prompt = TemplateFormat(STRICT).render(ChatInput(history, ToolUse((WEATHER,))))
    assert '[assistant]{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "[user]Result of the function call call_abc:\n21 C\n\nResult of the function call call_def:\nsunny" in prompt


def test_a_template_that_knows_tools_gets_them_and_argument_objects():
    prompt = TemplateFormat(WITH_TOOLS).render(ChatInput(CALLED, ToolUse((WEATHER,))))
    assert prompt.startswith("TOOLS:[{")
    assert 'CALL get_weather {"city": "Paris"} call_abc' in prompt and "tool: 21 C for call_abc" in prompt


def test_mistral_gets_nine_character_call_ids_that_still_match():
    prompt = MistralFormat(WITH_TOOLS).render(ChatInput(CALLED, ToolUse((WEATHER,))))
    call_id = prompt.split("CALL get_weather ")[1].split()[-1]
    assert len(call_id) == 9 and call_id.isalnum() and f"for {call_id}" in prompt


@pytest.mark.parametrize(("chat_format", "before", "opening"), [
    (Qwen3Format(), "", '<tool_call>\n{"name": "get_weather", "arguments": '),
    (HermesFormat(WITH_TOOLS), "", '<tool_call>\n{"name": "get_weather", "arguments": '),
    (Llama3Format(WITH_TOOLS), "", '{"name": "get_weather", "parameters": '),
    (MistralFormat(WITH_TOOLS), "[TOOL_CALLS][", '{"name": "get_weather", "arguments": '),
    (TemplateFormat(PLAIN), "", '{"name": "get_weather", "arguments": '),
])
def test_required_calls_are_forced_in_the_family_syntax(chat_format, before, opening):
    plan = chat_format.plan(ChatInput(ASK, ToolUse((WEATHER,), mode="required", forced=("get_weather",))))
    assert isinstance(plan.constraint, ForcedCalls)
    syntax = plan.constraint.syntax
    assert syntax.before == before
    assert f'{syntax.open}{{"name": "get_weather", "{syntax.arguments_key}": ' == opening
    assert [function["name"] for function in plan.constraint.functions] == ["get_weather"]


def test_response_format_and_parallel_limit_come_with_the_plan():
    plan = TemplateFormat(PLAIN).plan(ChatInput(ASK, ToolUse((WEATHER,), parallel=False), json_schema={}))
    assert plan.constraint == JsonContent(None)
    assert isinstance(plan.new_parser(), OneCallFilter)
    assert TemplateFormat(PLAIN).plan(ChatInput(ASK)).constraint is None


def test_mistral_plan_preserves_its_marker_tokens():
    assert "[TOOL_CALLS]" in MistralFormat(WITH_TOOLS).plan(ChatInput(ASK)).preserved_tokens
