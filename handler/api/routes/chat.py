"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.answers.chat import ChatShaper
from handler.api.calls import ModelCalls
from handler.api.chat_requests import plan_chat, start_chat_replies
from handler.api.dependencies import CallsDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.protocols.chat import ChatCompletion, ChatCompletionRequest
from handler.settings import Settings


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a chat completion (OpenAI-compatible; `stream: true` for SSE)")
    async def create(self, data: JSONBody[ChatCompletionRequest], request: Request[Any, Any, Any], calls: CallsDep,
                     settings: SettingsDep) -> Response[ChatCompletion] | Stream:
        return await chat_answer(data, request, calls, settings)


async def chat_answer(data: ChatCompletionRequest, request: Request[Any, Any, Any], calls: ModelCalls,
                      settings: Settings, route: str = "chat") -> Response[ChatCompletion] | Stream:
    plan = await plan_chat(data)
    async with calls.open(request, data.model, "chat", route=route) as call:
        started = await start_chat_replies(call, data, plan, settings)
        shaper = ChatShaper(call.model, data.n, bool(data.logprobs),
                            bool(data.stream_options and data.stream_options.include_usage))
        return await call.answer(started, shaper, stream=data.stream, per_prompt=data.n)
