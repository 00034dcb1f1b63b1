"""Between the chat wire schemas and the engine: request → `ChatRequest`, events → OpenAI objects."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import msgspec

from handler.api.chat_protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
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
from handler.api.errors import error_body
from handler.api.sse import DONE, sse_event
from handler.api.tool_choice import ToolPlan
from handler.engine.chat import ChatEvent
from handler.engine.types import ChatRequest, SamplingParams, SamplingRequest, ServerSampling, TokenLogprob
from handler.errors import InvalidRequest, ServiceUnavailable
from handler.formats.chat_format import ChatInput
from handler.formats.output import OutputDelta, merge_deltas
from handler.settings import Settings


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def server_sampling(settings: Settings) -> ServerSampling:
    """The server environment's sampling defaults, as `resolve_sampling` takes them."""
    return ServerSampling(temperature=settings.temperature, max_tokens=settings.max_tokens)


def logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
    return bias


def sampling_request(data: ChatCompletionRequest) -> SamplingRequest:
    """What the request set (None where it set nothing); the engine's `resolve_sampling` fills the rest."""
    return SamplingRequest(
        max_tokens=data.max_completion_tokens or data.max_tokens, temperature=data.temperature,
        top_p=data.top_p, top_k=data.top_k, min_p=data.min_p,
        repeat_penalty=data.repeat_penalty or None,  # 0 means off, as 1 does
        presence_penalty=data.presence_penalty, frequency_penalty=data.frequency_penalty,
        seed=data.seed, stop=stop_strings(data.stop), logit_bias=logit_bias(data.logit_bias),
    )


def message_dict(message: Any) -> dict[str, Any]:
    as_dict: dict[str, Any] = msgspec.to_builtins(message)
    if as_dict["role"] == "developer":  # OpenAI's newer name for the system role
        as_dict["role"] = "system"
    return as_dict


def check_choices(data: ChatCompletionRequest) -> None:
    if data.top_logprobs is not None and not data.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")


def enable_thinking(template_kwargs: dict[str, Any] | None, direct: bool | None = None) -> bool | None:
    """`chat_template_kwargs.enable_thinking`, else the top-level `enable_thinking` (vLLM sends both)."""
    value = (template_kwargs or {}).get("enable_thinking", direct)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("enable_thinking must be a boolean", param="chat_template_kwargs.enable_thinking")
    return value


def chat_request(data: ChatCompletionRequest, params: SamplingParams, plan: ToolPlan) -> ChatRequest:
    thinking = enable_thinking(data.chat_template_kwargs, data.enable_thinking)
    chat = ChatInput(messages=[message_dict(message) for message in data.messages], tools=plan.tools,
                     json_schema=plan.json_schema, enable_thinking=thinking)
    logprobs = (data.top_logprobs or 0) if data.logprobs else None
    return ChatRequest(chat=chat, params=params, logprobs=logprobs, choices=data.n)


def _usage(finals: dict[int, ChatEvent]) -> UsageOut:
    """The prompt is read once whatever `n` is (by the first choice, whose reuse is the request's);
    every choice's tokens count."""
    usages = [event.usage for event in finals.values() if event.usage is not None]
    first = finals[min(finals)].usage
    assert first is not None  # `_final` checked every choice's
    prompt, completion = first.prompt_tokens, sum(usage.completion_tokens for usage in usages)
    return UsageOut(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                    prompt_tokens_details=PromptTokensDetails(cached_tokens=first.cached_tokens))


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _logprobs_out(entries: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        TokenLogprobOut(token=entry.text, logprob=entry.logprob, bytes=list(entry.bytes),
                        top_logprobs=[TopLogprob(token=choice.text, logprob=choice.logprob, bytes=list(choice.bytes))
                                      for choice in entry.top])
        for entry in entries])


def _final(finals: dict[int, ChatEvent], choices: int) -> dict[int, ChatEvent]:
    """Every choice's final event, or the error for a reply the server cut short."""
    if len(finals) != choices or any(event.finish_reason == "cancelled" or event.usage is None
                                     for event in finals.values()):
        raise cut_short()
    return finals


async def complete(events: AsyncIterator[tuple[int, ChatEvent]], model_name: str, *, choices: int = 1,
                   logprobs: bool = False) -> ChatCompletion:
    deltas: dict[int, list[OutputDelta]] = {index: [] for index in range(choices)}
    entries: dict[int, list[TokenLogprob]] = {index: [] for index in range(choices)}
    finals: dict[int, ChatEvent] = {}
    async for index, event in events:
        if event.delta is not None:
            deltas[index].append(event.delta)
        entries[index].extend(event.logprobs)
        if event.finish_reason is not None:
            finals[index] = event
    _final(finals, choices)
    return ChatCompletion(id=new_completion_id(), created=int(time.time()), model=model_name,
                          choices=[_choice(index, deltas[index], finals[index],
                                           _logprobs_out(entries[index]) if logprobs else None)
                                   for index in range(choices)],
                          usage=_usage(finals))


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


def cut_short() -> ServiceUnavailable:
    """A generation the server stopped (shutdown past DRAIN_TIMEOUT_S, or the model unloaded)."""
    return ServiceUnavailable("the reply was cut short: the server stopped this generation (shutting down or "
                              "unloading the model); retry the request", code="model_unloaded", retry_after_s=1)


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


async def stream_chunks(events: AsyncIterator[tuple[int, ChatEvent]], model_name: str, *, include_usage: bool,
                        choices: int = 1, logprobs: bool = False) -> AsyncGenerator[bytes, None]:
    """SSE bytes of a streamed completion; an error after the first byte becomes an error event."""
    completion_id, created = new_completion_id(), int(time.time())

    def chunk(parts: list[ChunkChoice], usage: UsageOut | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=completion_id, created=created, model=model_name,
                                             choices=parts, usage=usage))

    # The role chunks leave with the first text, and each event's chunks in one write: a lone small
    # write followed by another waits on the client's delayed ACK (Nagle), adding tens of ms to TTFT.
    pending = b"".join(chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
                       for index in range(choices))
    tool_indexes, finals = dict.fromkeys(range(choices), 0), {}
    try:
        async for index, event in events:
            parts = []
            for position, delta in enumerate(_deltas_of(event, tool_indexes[index])):
                entries = _logprobs_out(event.logprobs) if logprobs and position == 0 else None
                parts.append(chunk([ChunkChoice(index=index, delta=delta, logprobs=entries)]))
            tool_indexes[index] += 1 if event.delta is not None and event.delta.tool_call is not None else 0
            if event.finish_reason == "cancelled":
                raise cut_short()  # never a bare [DONE]: the client must see the reply is incomplete
            if event.finish_reason is not None:
                finals[index] = event
                parts.append(chunk([ChunkChoice(index=index, delta=Delta(),
                                                finish_reason=event.finish_reason)]))
            if parts:
                yield pending + b"".join(parts)
                pending = b""
        _final(finals, choices)
        if include_usage:
            yield chunk([], usage=_usage(finals))
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        pending += sse_event(error_body(exc)[1])
    yield pending + DONE
