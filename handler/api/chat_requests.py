"""A chat completion request → the engine's `ChatRequest`: sampling, messages, tools and thinking,
decided once for every route that chats (chat completions, responses, messages)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import msgspec
from litestar import Request, Response
from litestar.response import Stream

from handler.api.calls import ModelCall, ModelCalls, Shaper
from handler.api.protocols.chat import ChatCompletionRequest, ChatMessage
from handler.api.tool_choice import ToolPlan, plan_tools
from handler.engine.chat import StartedChat, start_chats
from handler.engine.types import ChatRequest, SamplingParams, SamplingRequest, ServerSampling, resolve_sampling
from handler.errors import InvalidRequest
from handler.formats.chat_format import ChatInput
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


def check_continuation(messages: list[ChatMessage], *, thinking: bool | None, plan: ToolPlan | None = None) -> None:
    """A reply can continue the final message when that is the assistant's text: not a user's, not
    calls, and not under a constraint (forced calls, a JSON format) or thinking, which would each
    start the reply over."""
    final = messages[-1]
    if final.role != "assistant":
        raise InvalidRequest("continue_final_message needs the assistant's message last", param="messages")
    if final.tool_calls:
        raise InvalidRequest("a final message with tool calls cannot be continued", param="messages")
    if thinking is True:
        raise InvalidRequest("continuing the final message cannot be combined with thinking: its text is the "
                             "answer", param="enable_thinking")
    if plan is not None and (plan.tools.mode == "required" or plan.json_schema is not None):
        raise InvalidRequest("continuing the final message cannot be combined with a forced tool call or a "
                             "response format", param="messages")


def chat_input(data: ChatCompletionRequest, plan: ToolPlan) -> ChatInput:
    """The conversation the model's chat format renders: messages, tools, constraint, thinking."""
    thinking = enable_thinking(data.chat_template_kwargs, data.enable_thinking)
    return ChatInput(messages=[message_dict(message) for message in data.messages], tools=plan.tools,
                     json_schema=plan.json_schema, enable_thinking=thinking,
                     continue_final=data.continue_final_message)


def chat_request(data: ChatCompletionRequest, params: SamplingParams, plan: ToolPlan) -> ChatRequest:
    logprobs = (data.top_logprobs or 0) if data.logprobs else None
    return ChatRequest(chat=chat_input(data, plan), params=params, logprobs=logprobs, choices=data.n)




async def plan_chat(data: ChatCompletionRequest) -> ToolPlan:
    """Check the request's choices, tools and schemas (off the loop: schemas are walked), before any
    model is leased: a bad schema never loads a model."""
    check_choices(data)
    plan = await asyncio.to_thread(plan_tools, data)
    if data.continue_final_message:
        check_continuation(data.messages, thinking=enable_thinking(data.chat_template_kwargs, data.enable_thinking),
                           plan=plan)
    return plan


async def answer_chat(data: ChatCompletionRequest, request: Request[Any, Any, Any], calls: ModelCalls,
                      settings: Settings, *, route: str, shaper: Callable[[str], Shaper],
                      stream: bool) -> Response[Any] | Stream:
    """A chat request of any route that chats, answered in that route's format: checked before any
    model is leased, then one call, its replies, and the shaper made for the model's name."""
    plan = await plan_chat(data)
    async with calls.open(request, data.model, "chat", route=route) as call:
        started = await start_chat_replies(call, data, plan, settings)
        return await call.answer(started, shaper(call.model), stream=stream, per_prompt=data.n)


async def start_chat_replies(call: ModelCall, data: ChatCompletionRequest, plan: ToolPlan,
                             settings: Settings) -> list[StartedChat]:
    """The request's replies started on the call's model (a slot each, one per choice of `n`); a client
    that leaves while waiting for a slot gives its place up."""
    model = call.chat_model
    params = resolve_sampling(sampling_request(data), model_seed=model.options.seed, server=server_sampling(settings))
    request = attrs.evolve(chat_request(data, params, plan), tenant=call.tenant)
    return await call.unless_gone(start_chats(model, request))
