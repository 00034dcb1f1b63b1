"""A reply that continues the final assistant message (Anthropic's prefill, `continue_final_message`):
the prompt ends right after that message's text, whatever the format; and ChatML models without think
blocks render as their own template does."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from handler.formats.chat_format import ChatInput, ToolUse
from handler.formats.content import content_text
from handler.formats.gguf_template import default_system_prompt, render_gguf_template
from handler.formats.qwen3 import Qwen3Format
from handler.formats.registry import choose_format
from handler.formats.template_format import TemplateFormat
from tests.unit.formats.conversations import CONVERSATIONS, ONE_STEP, SYSTEM, USER, WEATHER, call, tool_reply

PREFILL = "The weather in Paris is"
CONTINUED = [
    ("after a question", [USER, {"role": "assistant", "content": PREFILL}], None),
    ("with a system prompt", [SYSTEM, USER, {"role": "assistant", "content": PREFILL}], None),
    ("with tools offered", [SYSTEM, USER, {"role": "assistant", "content": PREFILL}], [WEATHER]),
    ("after a tool result", [*ONE_STEP, {"role": "assistant", "content": PREFILL}], [WEATHER]),
    ("with its reasoning", [USER, {"role": "assistant", "content": PREFILL, "reasoning_content": "Look it up."}],
     None),
    ("text parts", [USER, {"role": "assistant", "content": [{"type": "text", "text": PREFILL}]}], None),
    ("a later turn", [USER, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Rome?"},
                      {"role": "assistant", "content": PREFILL}], None),
]
# A plain ChatML template (SmolLM2's, without the default system prompt it adds): no think blocks.
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _continued(chat_format, messages, tools=None) -> str:
    return chat_format.plan(ChatInput(messages, ToolUse(tuple(tools or ())), continue_final=True)).prompt


@pytest.mark.parametrize(("messages", "tools"), [case[1:] for case in CONTINUED], ids=[case[0] for case in CONTINUED])
def test_qwen3_continues_where_the_official_template_puts_the_text(official_render, messages, tools):
    """The oracle: the official template's whole conversation cut right after the final text, as
    transformers' `continue_final_message` does it."""
    as_text = [{**message, "content": content_text(message.get("content"))} for message in messages]
    whole = official_render(as_text, tools, add_generation_prompt=False)
    expected = whole[: whole.rindex(PREFILL) + len(PREFILL)]
    assert _continued(Qwen3Format(), messages, tools) == expected


@pytest.mark.parametrize("text", [">", "|>", "<|im_end|", "\n", "end"])
def test_text_that_looks_like_markup_is_continued_where_it_is(text):
    """Searching the rendered prompt for the text would find it in the end-of-turn markup instead."""
    prompt = _continued(Qwen3Format(), [USER, {"role": "assistant", "content": text}])
    assert prompt == f"<|im_start|>user\n{USER['content']}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n{text}"


def test_chatml_continues_without_a_think_block():
    prompt = _continued(Qwen3Format("chatml"), [USER, {"role": "assistant", "content": PREFILL}])
    assert prompt == f"<|im_start|>user\n{USER['content']}<|im_end|>\n<|im_start|>assistant\n{PREFILL}"


PLAIN_TURNS = [case for case in CONVERSATIONS if not case[2] and all(
    message["role"] in ("system", "user", "assistant") and not message.get("tool_calls")
    and isinstance(message.get("content"), str) for message in case[1])]


@pytest.mark.parametrize(("messages", "options"), [(case[1], case[3]) for case in PLAIN_TURNS],
                         ids=[case[0] for case in PLAIN_TURNS])
def test_chatml_renders_as_a_plain_chatml_template(messages, options):
    """Reasoning, inline think blocks and `enable_thinking` are Qwen3's: a ChatML model's template shows
    an assistant's text as sent and never opens a think block (before, `enable_thinking: false` put an
    empty one into SmolLM2's prompt)."""
    template = ImmutableSandboxedEnvironment().from_string(CHATML)
    expected = template.render(messages=messages, add_generation_prompt=options.get("add_generation_prompt", True))
    assert Qwen3Format("chatml").plan(ChatInput(messages, **options)).prompt == expected


# The same with a default system prompt for conversations without one, as SmolLM2's template has.
CHATML_WITH_DEFAULT = CHATML.replace(
    "{% for message in messages %}", "{% for message in messages %}{% if loop.first and messages[0]['role'] != "
    "'system' %}{{ '<|im_start|>system\nYou answer in one line.<|im_end|>\n' }}{% endif %}")


@pytest.mark.parametrize(("messages", "options"), [(case[1], case[3]) for case in PLAIN_TURNS],
                         ids=[case[0] for case in PLAIN_TURNS])
def test_chatml_renders_the_default_system_prompt_its_template_adds(messages, options):
    """Chosen from the template, the format renders what the template does, its default system prompt
    included (before, a conversation without a system message lost it)."""
    add_generation_prompt = options.get("add_generation_prompt", True)
    expected = render_gguf_template(CHATML_WITH_DEFAULT, messages, add_generation_prompt=add_generation_prompt)
    assert choose_format(None, CHATML_WITH_DEFAULT).plan(ChatInput(messages, **options)).prompt == expected


@pytest.mark.parametrize(("template", "default"), [
    (CHATML_WITH_DEFAULT, "You answer in one line."),
    (CHATML, None),
    ("{{ raise_exception('no') }}", None),
    ("<|im_start|>system\nfixed<|im_end|>\nnot a turn{% for m in messages %}{{ m.content }}{% endfor %}", None),
])
def test_the_default_system_prompt_is_read_off_the_template(template, default):
    assert default_system_prompt(template) == default


def test_plain_turns_cover_reasoning_and_thinking_options():
    names = {case[0] for case in PLAIN_TURNS}
    assert {"thinking off", "empty reasoning_content", "inline think after last query", "last assistant without reasoning"} <= names


PLAIN = ("{% for m in messages %}<|turn|>{{ m.role }}\n{{ m.content | trim }}<|end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}")


def test_a_jinja_template_continues_after_the_text_as_sent():
    """The template trims the text; the continued prompt keeps the text exactly as the request sent it."""
    prompt = _continued(TemplateFormat(PLAIN), [USER, {"role": "assistant", "content": " {"}])
    assert prompt == f"<|turn|>user\n{USER['content']}<|end|>\n<|turn|>assistant\n {{"


def test_a_template_that_drops_the_final_message_gets_the_opened_turn_and_the_text():
    drops_last = ("{% for m in messages %}{% if not (loop.last and m.role == 'assistant') %}<|turn|>{{ m.role }}\n"
                  "{{ m.content }}<|end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|turn|>assistant\n"
                  "{% endif %}")
    prompt = _continued(TemplateFormat(drops_last), [USER, {"role": "assistant", "content": PREFILL}])
    assert prompt == f"<|turn|>user\n{USER['content']}<|end|>\n<|turn|>assistant\n{PREFILL}"


def test_a_tool_result_turn_is_kept_before_the_continued_text():
    messages = [USER, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
                tool_reply("21 C"), {"role": "assistant", "content": PREFILL}]
    prompt = _continued(Qwen3Format(), messages, [WEATHER])
    assert prompt.endswith(f"<tool_response>\n21 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
                           f"<think>\n\n</think>\n\n{PREFILL}")
