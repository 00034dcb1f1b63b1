"""Manifest warm prompts as the engine reads them.

A warm prompt is a chat request body (messages, tools, tool_choice, chat_template_kwargs, …). It is
decoded and mapped by the same code as the chat route, so the prompt it renders is, token for token,
what a client sending that body gets: the KV state warm-up leaves in a slot (and on the volume) is a
prefix of that client's prompt. Only what shapes the prompt is kept; warm-up samples one greedy token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from handler.api.chat_requests import chat_request, check_choices, sampling_request
from handler.api.protocols.chat import ChatCompletionRequest
from handler.api.tool_choice import plan_tools
from handler.engine.types import ChatRequest, ServerSampling, resolve_sampling
from handler.errors import InvalidRequest

PROMPT_FIELDS = ("messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
                 "chat_template_kwargs", "enable_thinking")
ONE_GREEDY_TOKEN = ServerSampling(temperature=0.0, max_tokens=1)


class WarmPromptError(ValueError):
    """A warm prompt that no chat request could be: the message says which and why."""


def warm_prompt_request(model: str, body: Mapping[str, Any]) -> ChatRequest:
    kept = {key: body[key] for key in PROMPT_FIELDS if key in body}
    try:
        data = msgspec.convert({**kept, "model": model}, ChatCompletionRequest)
        check_choices(data)
        plan = plan_tools(data)
    except (msgspec.ValidationError, InvalidRequest) as exc:
        raise WarmPromptError(str(exc)) from None
    params = resolve_sampling(sampling_request(data), model_seed=None, server=ONE_GREEDY_TOKEN)
    return chat_request(data, params, plan)
