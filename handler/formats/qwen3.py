"""Qwen3: a pure re-implementation of the official chat template, and the parser of its output.

`render_prompt` gives byte-for-byte what Hugging Face transformers renders from the `chat_template` in
Qwen3's tokenizer_config.json (tests compare both over many conversations), without running any
template code; `parse_output` reads a reply back into content, reasoning and tool calls. ChatML
models (`<|im_start|>`) share the layout, so `Qwen3Format` serves them too.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from handler.formats.chat_format import CallSyntax, ChatFormat, ChatInput
from handler.formats.content import content_text
from handler.formats.output import CallIds, OutputParser, ParsedOutput, new_call_id, parse_all
from handler.formats.tagged_calls import TaggedCallParser

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_EPILOGUE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n"
)
EMPTY_THINK = "<think>\n\n</think>\n\n"


def tojson(value: Any) -> str:
    """The template's `tojson` as transformers defines it: key order kept, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def _is_tool_response(text: str) -> bool:
    return text.startswith("<tool_response>") and text.endswith("</tool_response>")


def _last_query_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last user message that is a real query (not a wrapped tool response)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "user" and not _is_tool_response(content_text(message.get("content"))):
            return index
    return len(messages) - 1


def _split_reasoning(message: Mapping[str, Any]) -> tuple[str, str]:
    """(content, reasoning) of an assistant turn: explicit `reasoning_content`, else inline <think>."""
    content = content_text(message.get("content"))
    if message.get("reasoning_content") is not None:
        return content, message["reasoning_content"]
    if "</think>" not in content:
        return content, ""
    before, _, _ = content.partition("</think>")
    reasoning = before.rstrip("\n").split("<think>")[-1].lstrip("\n")
    return content.split("</think>")[-1].lstrip("\n"), reasoning


def _render_tool_call(tool_call: Mapping[str, Any]) -> str:
    function = tool_call.get("function") or tool_call
    arguments = function.get("arguments")
    arguments_text = arguments if isinstance(arguments, str) else tojson(arguments)
    return f'<tool_call>\n{{"name": "{function.get("name")}", "arguments": {arguments_text}}}\n</tool_call>'


def _render_assistant(message: Mapping[str, Any], *, after_last_query: bool, is_last: bool,
                      thinking: bool) -> str:
    content, reasoning = _split_reasoning(message) if thinking else (content_text(message.get("content")), "")
    if thinking and after_last_query and (is_last or reasoning):
        text = f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
    else:
        text = f"<|im_start|>assistant\n{content}"
    for position, tool_call in enumerate(message.get("tool_calls") or ()):
        if position > 0 or content:
            text += "\n"
        text += _render_tool_call(tool_call)
    return text + "<|im_end|>\n"


def _render_system_block(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> str:
    system = content_text(messages[0].get("content")) if messages and messages[0]["role"] == "system" else None
    if tools:
        head = "<|im_start|>system\n" + (system + "\n\n" if system is not None else "")
        return head + TOOLS_PREAMBLE + "".join("\n" + tojson(tool) for tool in tools) + TOOLS_EPILOGUE
    return f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""


def render_prompt(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None, *,
                  add_generation_prompt: bool = True, enable_thinking: bool | None = None,
                  thinking: bool = True) -> str:
    """Render OpenAI-shaped `messages` (and `tools`) exactly as the official Qwen3 template does.
    `thinking=False`: as a ChatML model without think blocks (SmolLM2's template) renders its turns,
    an assistant's text as sent and no think block, whatever `enable_thinking` says."""
    parts = [_render_system_block(messages, tools)]
    last_query = _last_query_index(messages)
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and index > 0):
            parts.append(f"<|im_start|>{role}\n{content_text(message.get('content'))}<|im_end|>\n")
        elif role == "assistant":
            parts.append(_render_assistant(message, after_last_query=index > last_query, is_last=index == last,
                                           thinking=thinking))
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                parts.append("<|im_start|>user")
            parts.append(f"\n<tool_response>\n{content_text(message.get('content'))}\n</tool_response>")
            if index == last or messages[index + 1]["role"] != "tool":
                parts.append("<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n" + (EMPTY_THINK if thinking and enable_thinking is False else ""))
    return "".join(parts)


def parse_output(text: str, tool_names: Collection[str] = (), *, in_think: bool = False,
                 new_id: CallIds = new_call_id) -> ParsedOutput:
    """Parse a whole reply; the same machine as streaming, fed all at once."""
    return parse_all(TaggedCallParser(tool_names, in_think=in_think, new_id=new_id), text)


class Qwen3Format(ChatFormat):
    """Qwen3's template (`name` "qwen3"), or the ChatML layout it shares without think blocks ("chatml")."""

    syntax = CallSyntax(open="<tool_call>\n", close="\n</tool_call>")

    def __init__(self, name: str = "qwen3", *, default_system: str | None = None) -> None:
        self.name = name
        self.default_system = default_system  # what the model's template says when no system message is sent

    def render(self, chat: ChatInput) -> str:
        messages = chat.messages
        if self.default_system is not None and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        return render_prompt(messages, chat.tools.tools or None, enable_thinking=chat.enable_thinking,
                             add_generation_prompt=chat.add_generation_prompt, thinking=self.name == "qwen3")

    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        # Some Qwen3 templates open the think block in the prompt; then only </think> is generated.
        return TaggedCallParser(chat.tools.names, in_think=prompt.rstrip("\n").endswith("<think>"))
