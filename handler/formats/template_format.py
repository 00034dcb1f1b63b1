"""Formats rendered by a Jinja chat template (the GGUF's own, or the manifest's `chat_template`), in
the sandbox of `gguf_template`; and the generic format for templates that know nothing of tools.

Templates get what Hugging Face templates expect: text content, tool-call arguments as objects.
A template that does not mention `tools` still gets them, as a block in the system message, and one
that cannot show calls or tool results gets them folded into plain assistant and user turns; the
model is then asked to answer with a bare JSON call object, which `JsonCallParser` reads back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from handler.formats.chat_format import ChatFormat, ChatInput, Messages
from handler.formats.content import content_text
from handler.formats.gguf_template import render_gguf_template
from handler.formats.json_calls import JsonCallParser
from handler.formats.output import OutputParser

TOOLS_INSTRUCTION = (
    "You can call these functions, given as JSON schemas:\n{signatures}\n\n"
    "To call a function, answer with only a JSON object, nothing else: "
    '{{"name": "<function name>", "arguments": {{<arguments>}}}}'
)


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _with_call_objects(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as templates expect it: text content, each call's arguments as an object."""
    flat = {**message, "content": content_text(message.get("content"))}
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append({**call, "function": {**function, "arguments": _arguments_object(function.get("arguments"))}})
    if calls:
        flat["tool_calls"] = calls
    return flat


class TemplateFormat(ChatFormat):
    """Rendered by `template`; a family subclass says how its calls are written and read."""

    name = "gguf"

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "") -> None:
        self.template, self.bos_token, self.eos_token = template, bos_token, eos_token
        self.knows_tools = "tools" in template
        self.knows_calls = "tool_calls" in template
        self.knows_tool_role = re.search(r"""['"]tool['"]""", template) is not None

    def render(self, chat: ChatInput) -> str:
        messages = [_with_call_objects(message) for message in chat.messages]
        tools = list(chat.tools.tools) or None
        if tools and not self.knows_tools:
            messages, tools = _with_tools_block(messages, tools), None
        if not (self.knows_calls and self.knows_tool_role):
            messages = _fold_tool_turns(messages)
        extra = {} if chat.enable_thinking is None else {"enable_thinking": chat.enable_thinking}
        return render_gguf_template(self.template, messages, tools=tools, bos_token=self.bos_token,
                                    eos_token=self.eos_token, add_generation_prompt=chat.add_generation_prompt,
                                    **extra)

    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        return JsonCallParser(chat.tools.names)


def _with_tools_block(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    block = TOOLS_INSTRUCTION.format(signatures="\n".join(json.dumps(tool["function"], ensure_ascii=False)
                                                           for tool in tools))
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def _fold_tool_turns(messages: Messages) -> list[dict[str, Any]]:
    """Calls become JSON lines of the assistant's text, results become user turns; turns of the same
    role that end up next to each other are joined (many templates insist on alternation)."""
    folded: list[dict[str, Any]] = []
    for message in messages:
        role, text = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [json.dumps({"name": call["function"].get("name"), "arguments": call["function"].get("arguments")},
                                ensure_ascii=False) for call in message["tool_calls"]]
            text = "\n".join([text, *calls] if text else calls)
        elif role == "tool":
            role, text = "user", f"Result of the function call {message.get('tool_call_id') or ''}:\n{text}"
        if folded and folded[-1]["role"] == role and role != "system":
            folded[-1] = {**folded[-1], "content": f"{folded[-1]['content']}\n\n{text}"}
        else:
            folded.append({"role": role, "content": text})
    return folded
