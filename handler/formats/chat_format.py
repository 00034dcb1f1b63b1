"""A model's chat format: from one request, the prompt, the output constraint and the output parser,
decided together so they always agree (llama.cpp's `common_chat_params` does the same).

The request's tool fields arrive already checked as a `ToolUse`; a format adds what only it knows:
how it renders tools into the prompt, how its calls are written (`CallSyntax`, from which the engine
builds the grammar that forces a call) and how its output is read back.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from handler.formats.content import content_text
from handler.formats.output import OneCallFilter, OutputParser

Messages = Sequence[Mapping[str, Any]]
# Stands for a continued message's text while its conversation renders: private-use code points, which
# no template's markup holds (a copy in an earlier message is passed over: the final one renders last).
CONTINUATION_MARK = "\ue000continued\ue000"
ToolMode = Literal["none", "auto", "required"]


@attrs.frozen
class ToolUse:
    """What the request's `tools`, `tool_choice` and `parallel_tool_calls` decided."""

    tools: tuple[dict[str, Any], ...] = ()  # shown to the model (empty: none)
    mode: ToolMode = "auto"  # "required": the reply must be calls to `forced` functions
    forced: tuple[str, ...] = ()  # the functions a required call may name
    parallel: bool = True

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool["function"]["name"] for tool in self.tools)

    def functions(self, names: Sequence[str]) -> list[dict[str, Any]]:
        return [tool["function"] for tool in self.tools if tool["function"]["name"] in names]


@attrs.frozen
class ChatInput:
    messages: Messages
    tools: ToolUse = ToolUse()
    json_schema: dict[str, Any] | None = None  # response_format: content must be this JSON ({} = any object)
    enable_thinking: bool | None = None
    add_generation_prompt: bool = True  # False only for /tokenize: the conversation as it stands
    # The reply continues the final (assistant) message's text instead of starting a turn of its own:
    # Anthropic's prefill, vLLM's `continue_final_message`. The request checked that it can (text only).
    continue_final: bool = False


@attrs.frozen
class CallSyntax:
    """How a format writes tool calls: `before`, then the calls joined by `separator`, then `after`;
    each call is `open` + `{"name": "…", "<arguments_key>": {…}}` + `close`."""

    open: str = ""
    close: str = ""
    separator: str = "\n"
    before: str = ""
    after: str = ""
    arguments_key: str = "arguments"


@attrs.frozen
class ForcedCalls:
    """The output must be calls, in `syntax`, to `functions`, with arguments matching their schemas."""

    syntax: CallSyntax
    functions: tuple[dict[str, Any], ...]
    parallel: bool


@attrs.frozen
class JsonContent:
    """The output must be JSON matching `schema` (None: any JSON object)."""

    schema: dict[str, Any] | None


Constraint = ForcedCalls | JsonContent


@attrs.frozen
class ChatPlan:
    prompt: str
    constraint: Constraint | None
    new_parser: Callable[[], OutputParser]  # one fresh parser per reply (a request with `n` has n replies)
    # Special tokens whose text the parser needs to see (`[TOOL_CALLS]`): the engine renders them.
    preserved_tokens: tuple[str, ...] = ()


class ChatFormat(abc.ABC):
    name: str
    syntax: CallSyntax = CallSyntax()
    preserved_tokens: tuple[str, ...] = ()

    @abc.abstractmethod
    def render(self, chat: ChatInput) -> str:
        """The prompt, ending where the assistant's reply starts."""

    @abc.abstractmethod
    def new_parser(self, chat: ChatInput, prompt: str) -> OutputParser:
        """A fresh parser for one reply, knowing the tools offered."""

    def render_continued(self, chat: ChatInput) -> str:
        """The prompt ending inside the final message, right after its text. The conversation renders
        with a mark for that text, and the prompt is cut at the mark: whatever the template writes
        before an assistant's text (a role header, an empty think block) stays, whatever it writes
        after (the end of the turn) goes, and the text itself follows exactly as sent (searching the
        rendered prompt for it could match inside the end-of-turn markup: a prefill of `>`). A
        template that drops the mark gets the turn the reply would start, then the text."""
        final = chat.messages[-1]
        text = content_text(final.get("content"))
        marked = attrs.evolve(chat, messages=[*chat.messages[:-1], {**final, "content": CONTINUATION_MARK}],
                              add_generation_prompt=False, continue_final=False)
        whole = self.render(marked)
        if (at := whole.rfind(CONTINUATION_MARK)) >= 0:
            return whole[:at] + text
        opened = attrs.evolve(chat, messages=chat.messages[:-1], add_generation_prompt=True, continue_final=False)
        return self.render(opened) + text

    def plan(self, chat: ChatInput) -> ChatPlan:
        prompt = self.render_continued(chat) if chat.continue_final else self.render(chat)

        def new_parser() -> OutputParser:
            parser = self.new_parser(chat, prompt)
            return parser if chat.tools.parallel else OneCallFilter(parser)

        return ChatPlan(prompt=prompt, constraint=self._constraint(chat), new_parser=new_parser,
                        preserved_tokens=self.preserved_tokens)

    def _constraint(self, chat: ChatInput) -> Constraint | None:
        tools = chat.tools
        if tools.mode == "required":
            return ForcedCalls(self.syntax, tuple(tools.functions(tools.forced)), tools.parallel)
        if chat.json_schema is not None:
            return JsonContent(chat.json_schema or None)
        return None
