"""The tool-calling families whose templates render tools themselves: each says how its model writes
a call (for the grammar that forces one) and reads its output back."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from handler.formats.chat_format import CallSyntax, ChatInput
from handler.formats.json_calls import JsonCallParser
from handler.formats.mistral_calls import ARGS_MARK, CALLS_MARK, MistralCallParser
from handler.formats.output import OutputParser, new_call_id
from handler.formats.tagged_calls import TaggedCallParser
from handler.formats.template_format import TemplateFormat


class HermesFormat(TemplateFormat):
    """`<tool_call>{…}</tool_call>` blocks (Qwen2.5, Hermes 2/3, QwQ; Qwen3 rendered by its own template)."""

    name = "hermes"
    syntax = CallSyntax(open="<tool_call>\n", close="\n</tool_call>")

    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        return TaggedCallParser(chat.tools.names, in_think=prompt.rstrip("\n").endswith("<think>"))


class Llama3Format(TemplateFormat):
    """Llama 3.1–3.3: a bare `{"name": …, "parameters": {…}}`, sometimes after `<|python_tag|>`."""

    name = "llama3"
    syntax = CallSyntax(arguments_key="parameters", separator="; ")
    preserved_tokens = ("<|python_tag|>",)

    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        return JsonCallParser(chat.tools.names, markers=self.preserved_tokens)


def _mistral_id(call_id: Any) -> str:
    """Mistral templates refuse call ids that are not 9 letters or digits; map any id to one, the same
    way every time, so a call and its result still match."""
    return hashlib.sha256(str(call_id).encode()).hexdigest()[:9]


class MistralFormat(TemplateFormat):
    """`[TOOL_CALLS][{…}, …]` or `[TOOL_CALLS]name[ARGS]{…}` (Mistral, Mixtral, Ministral, Devstral)."""

    name = "mistral"
    syntax = CallSyntax(before=CALLS_MARK + "[", separator=", ", after="]")
    preserved_tokens = (CALLS_MARK, ARGS_MARK, "[CALL_ID]")

    def render(self, chat: ChatInput) -> str:
        messages = []
        for message in chat.messages:
            message = dict(message)
            if message.get("tool_calls"):
                message["tool_calls"] = [{**call, "id": _mistral_id(call.get("id"))} for call in message["tool_calls"]]
            if message.get("tool_call_id") is not None:
                message["tool_call_id"] = _mistral_id(message["tool_call_id"])
            messages.append(message)
        return super().render(attrs.evolve(chat, messages=messages))

    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        return MistralCallParser(chat.tools.names, new_id=new_call_id)
