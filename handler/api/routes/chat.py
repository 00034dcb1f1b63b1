"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.answers.chat import ChatShaper
from handler.api.calls import ModelCalls
from handler.api.chat_requests import answer_chat
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
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    return await answer_chat(data, request, calls, settings, route=route, stream=data.stream,
                             shaper=lambda model: ChatShaper(model, data.n, bool(data.logprobs), include_usage))
