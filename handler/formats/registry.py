"""Which prompt renderer and output parser a model gets, chosen once when it loads.

Qwen3 and ChatML models (`<|im_start|>` in their template, or `chat_format = "qwen3"`/"chatml" in the
manifest) use the exact Qwen3 renderer and parser; any other model renders its own GGUF template in
the sandbox and its output is passed through as content.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import attrs

from handler.formats.content import content_text
from handler.formats.gguf_template import render_gguf_template
from handler.formats.qwen3 import render_prompt
from handler.formats.qwen3_parser import OutputDelta, Qwen3OutputParser

Messages = Sequence[Mapping[str, Any]]


class OutputParser(Protocol):
    def feed(self, text: str) -> list[OutputDelta]: ...
    def finish(self) -> list[OutputDelta]: ...


class ChatFormat(Protocol):
    @property
    def name(self) -> str: ...

    def render(self, messages: Messages, tools: Sequence[Any] | None, *, enable_thinking: bool | None) -> str: ...
    def new_parser(self, tool_names: Collection[str], prompt: str) -> OutputParser: ...


class PassthroughParser:
    """Output of models without a known markup: everything is content."""

    def feed(self, text: str) -> list[OutputDelta]:
        return [OutputDelta(content=text)] if text else []

    def finish(self) -> list[OutputDelta]:
        return []


@attrs.frozen
class Qwen3Format:
    name: str = "qwen3"

    def render(self, messages: Messages, tools: Sequence[Any] | None, *, enable_thinking: bool | None) -> str:
        return render_prompt(messages, tools, enable_thinking=enable_thinking)

    def new_parser(self, tool_names: Collection[str], prompt: str) -> OutputParser:
        # Some Qwen3 templates open the think block in the prompt; then only </think> is generated.
        return Qwen3OutputParser(tool_names, in_think=prompt.rstrip("\n").endswith("<think>"))


@attrs.frozen
class GgufTemplateFormat:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    name: str = "gguf"

    def render(self, messages: Messages, tools: Sequence[Any] | None, *, enable_thinking: bool | None) -> str:
        flat = [{**message, "content": content_text(message.get("content"))} for message in messages]
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        return render_gguf_template(self.template, flat, tools=tools, bos_token=self.bos_token,
                                    eos_token=self.eos_token, **extra)

    def new_parser(self, tool_names: Collection[str], prompt: str) -> OutputParser:
        return PassthroughParser()


def choose_format(chat_format: str | None, template: str | None, *, bos_token: str = "",
                  eos_token: str = "") -> ChatFormat:
    """Pick the format from the manifest's `chat_format`, else from the GGUF's own template."""
    if chat_format in ("qwen3", "chatml"):
        return Qwen3Format(name=chat_format)
    if chat_format != "gguf" and (not template or "<|im_start|>" in template):
        return Qwen3Format(name="chatml")  # no template at all: ChatML is the common default
    return GgufTemplateFormat(template or "", bos_token=bos_token, eos_token=eos_token)
