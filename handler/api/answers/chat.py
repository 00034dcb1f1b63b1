"""Replies → OpenAI chat completion objects: a `chat.completion`, or `chat.completion.chunk` events."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence

import attrs

from handler.api.answers.sse import DONE, sse_event
from handler.api.calls import Replies
from handler.api.errors import error_body
from handler.api.protocols.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionCall,
    PromptTokensDetails,
    TokenLogprobOut,
    ToolCallDelta,
    ToolCallOut,
    TopLogprob,
    UsageOut,
)
from handler.engine.chat import ChatEvent
from handler.engine.types import TokenLogprob, Usage
from handler.formats.output import OutputDelta, merge_deltas


def usage_out(usage: Usage) -> UsageOut:
    """OpenAI's usage object, for every OpenAI route that reports one."""
    return UsageOut(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens,
                    prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens))


def _logprobs_out(entries: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        TokenLogprobOut(token=entry.text, logprob=entry.logprob, bytes=list(entry.bytes),
                        top_logprobs=[TopLogprob(token=choice.text, logprob=choice.logprob, bytes=list(choice.bytes))
                                      for choice in entry.top])
        for entry in entries])


def _choice(index: int, deltas: list[OutputDelta], final: ChatEvent, logprobs: ChoiceLogprobs | None) -> Choice:
    parsed = merge_deltas(deltas)
    message = AssistantMessage(
        content=parsed.content if parsed.content or not parsed.tool_calls else None,
        reasoning_content=parsed.reasoning_content,
        tool_calls=[ToolCallOut(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
                    for call in parsed.tool_calls] or None,
    )
    return Choice(index=index, message=message, finish_reason=final.finish_reason,  # type: ignore[arg-type]
                  logprobs=logprobs)


def _deltas_of(event: ChatEvent, tool_index: int) -> list[Delta]:
    delta = event.delta
    if delta is None:
        return [Delta()] if event.logprobs else []
    if delta.tool_call is not None:
        call = delta.tool_call
        opening = ToolCallDelta(index=tool_index, id=call.id, type="function",
                                function={"name": call.name, "arguments": ""})
        arguments = ToolCallDelta(index=tool_index, function={"arguments": call.arguments})
        return [Delta(tool_calls=[opening]), Delta(tool_calls=[arguments])]
    if delta.reasoning:
        return [Delta(reasoning_content=delta.reasoning)]
    return [Delta(content=delta.content)]


@attrs.frozen
class ChatShaper:
    model: str
    choices: int = 1
    logprobs: bool = False
    include_usage: bool = False
    id: str = attrs.field(factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = attrs.field(factory=lambda: int(time.time()))
    end_frame = DONE

    async def body(self, replies: Replies) -> ChatCompletion:
        deltas: dict[int, list[OutputDelta]] = {index: [] for index in range(self.choices)}
        entries: dict[int, list[TokenLogprob]] = {index: [] for index in range(self.choices)}
        async for index, event in replies:
            if event.delta is not None:
                deltas[index].append(event.delta)
            entries[index].extend(event.logprobs)
        finals = replies.finals
        return ChatCompletion(id=self.id, created=self.created, model=self.model,
                              choices=[_choice(index, deltas[index], finals[index],
                                               _logprobs_out(entries[index]) if self.logprobs else None)
                                       for index in range(self.choices)],
                              usage=usage_out(replies.usage()))

    def _chunk(self, parts: list[ChunkChoice], usage: UsageOut | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=parts,
                                             usage=usage))

    async def frames(self, replies: Replies) -> AsyncGenerator[bytes, None]:
        # The role chunks leave with the first text, and each event's chunks in one write: a lone small
        # write followed by another waits on the client's delayed ACK (Nagle), adding tens of ms to TTFT.
        pending = b"".join(self._chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
                           for index in range(self.choices))
        tool_indexes = dict.fromkeys(range(self.choices), 0)
        async for index, event in replies:
            parts = []
            for position, delta in enumerate(_deltas_of(event, tool_indexes[index])):
                entries = _logprobs_out(event.logprobs) if self.logprobs and position == 0 else None
                parts.append(self._chunk([ChunkChoice(index=index, delta=delta, logprobs=entries)]))
            tool_indexes[index] += 1 if event.delta is not None and event.delta.tool_call is not None else 0
            if event.finish_reason is not None:
                parts.append(self._chunk([ChunkChoice(index=index, delta=Delta(),
                                                      finish_reason=event.finish_reason)]))  # type: ignore[arg-type]
            if parts:
                yield pending + b"".join(parts)
                pending = b""
        if self.include_usage:
            yield pending + self._chunk([], usage=usage_out(replies.usage()))
        elif pending:
            yield pending

    def error_frame(self, exc: Exception) -> bytes:
        return sse_event(error_body(exc)[1])
