"""Between the chat wire schemas and the engine: request → `ChatRequest`, events → OpenAI objects."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec

from handler.api.chat_protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    ToolCallDelta,
    ToolCallOut,
    UsageOut,
)
from handler.api.errors import error_body
from handler.api.sse import DONE, sse_event
from handler.api.tool_choice import ToolPlan
from handler.engine.chat import ChatEvent
from handler.engine.types import ChatRequest, SamplingParams, SamplingRequest, Usage
from handler.errors import InvalidRequest, ServiceUnavailable
from handler.formats.chat_format import ChatInput
from handler.formats.output import merge_deltas


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
    return bias


def sampling_request(data: ChatCompletionRequest) -> SamplingRequest:
    """What the request set (None where it set nothing); the engine's `resolve_sampling` fills the rest."""
    stop = (data.stop,) if isinstance(data.stop, str) else tuple(data.stop or ())
    return SamplingRequest(
        max_tokens=data.max_completion_tokens or data.max_tokens, temperature=data.temperature,
        top_p=data.top_p, top_k=data.top_k, min_p=data.min_p,
        repeat_penalty=data.repeat_penalty or None,  # 0 means off, as 1 does
        presence_penalty=data.presence_penalty, frequency_penalty=data.frequency_penalty,
        seed=data.seed, stop=stop, logit_bias=_logit_bias(data.logit_bias),
    )


def message_dict(message: Any) -> dict[str, Any]:
    as_dict: dict[str, Any] = msgspec.to_builtins(message)
    if as_dict["role"] == "developer":  # OpenAI's newer name for the system role
        as_dict["role"] = "system"
    return as_dict


def enable_thinking(data: ChatCompletionRequest) -> bool | None:
    kwargs = data.chat_template_kwargs or {}
    value = kwargs.get("enable_thinking", data.enable_thinking)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("enable_thinking must be a boolean", param="chat_template_kwargs.enable_thinking")
    return value


def chat_request(data: ChatCompletionRequest, params: SamplingParams, plan: ToolPlan) -> ChatRequest:
    chat = ChatInput(messages=[message_dict(message) for message in data.messages], tools=plan.tools,
                     json_schema=plan.json_schema, enable_thinking=enable_thinking(data))
    return ChatRequest(chat=chat, params=params)


def _usage(usage: Usage) -> UsageOut:
    return UsageOut(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens)


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def complete(events: AsyncIterator[ChatEvent], model_name: str) -> ChatCompletion:
    deltas, final = [], ChatEvent()
    async for event in events:
        if event.delta is not None:
            deltas.append(event.delta)
        if event.finish_reason is not None:
            final = event
    reason = final.finish_reason
    if reason is None or reason == "cancelled" or final.usage is None:
        raise cut_short()
    parsed = merge_deltas(deltas)
    message = AssistantMessage(
        content=parsed.content if parsed.content or not parsed.tool_calls else None,
        reasoning_content=parsed.reasoning_content,
        tool_calls=[ToolCallOut(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
                    for call in parsed.tool_calls] or None,
    )
    return ChatCompletion(id=new_completion_id(), created=int(time.time()), model=model_name,
                          choices=[Choice(index=0, message=message, finish_reason=reason)],
                          usage=_usage(final.usage))


def cut_short() -> ServiceUnavailable:
    """A generation the server stopped (shutdown past DRAIN_TIMEOUT_S, or the model unloaded)."""
    return ServiceUnavailable("the reply was cut short: the server stopped this generation (shutting down or "
                              "unloading the model); retry the request", code="model_unloaded", retry_after_s=1)


def _deltas_of(event: ChatEvent, tool_index: int) -> list[Delta]:
    delta = event.delta
    if delta is None:
        return []
    if delta.tool_call is not None:
        call = delta.tool_call
        opening = ToolCallDelta(index=tool_index, id=call.id, type="function",
                                function={"name": call.name, "arguments": ""})
        arguments = ToolCallDelta(index=tool_index, function={"arguments": call.arguments})
        return [Delta(tool_calls=[opening]), Delta(tool_calls=[arguments])]
    if delta.reasoning:
        return [Delta(reasoning_content=delta.reasoning)]
    return [Delta(content=delta.content)]


async def stream_chunks(events: AsyncIterator[ChatEvent], model_name: str, *,
                        include_usage: bool) -> AsyncGenerator[bytes, None]:
    """SSE bytes of a streamed completion; an error after the first byte becomes an error event."""
    completion_id, created = new_completion_id(), int(time.time())

    def chunk(choices: list[ChunkChoice], usage: UsageOut | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=completion_id, created=created, model=model_name,
                                             choices=choices, usage=usage))

    # The role chunk leaves with the first text, and each event's chunks in one write: a lone small
    # write followed by another waits on the client's delayed ACK (Nagle), adding tens of ms to TTFT.
    pending = chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
    tool_index, finished = 0, False
    try:
        async for event in events:
            parts = [chunk([ChunkChoice(index=0, delta=delta)]) for delta in _deltas_of(event, tool_index)]
            tool_index += 1 if event.delta is not None and event.delta.tool_call is not None else 0
            if event.finish_reason == "cancelled":
                raise cut_short()  # never a bare [DONE]: the client must see the reply is incomplete
            if event.finish_reason is not None:
                finished = True
                parts.append(chunk([ChunkChoice(index=0, delta=Delta(), finish_reason=event.finish_reason)]))
                if include_usage and event.usage is not None:
                    parts.append(chunk([], usage=_usage(event.usage)))
            if parts:
                yield pending + b"".join(parts)
                pending = b""
        if not finished:
            raise cut_short()
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        pending += sse_event(error_body(exc)[1])
    yield pending + DONE
