"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API on the chat engine.

The request becomes a chat completion request (`protocols.messages`), runs exactly as chat does, and
its parsed reply becomes content blocks (`answers.messages`). Errors, before or during a stream, come
in Anthropic's shape; `x-api-key` is accepted beside `Authorization: Bearer` (see `auth`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.answers.messages import MessageShaper
from handler.api.chat_requests import answer_chat, chat_input, plan_chat
from handler.api.dependencies import CallsDep, SettingsDep
from handler.api.errors import ANTHROPIC_ERROR_RESPONSES, anthropic_error_handler
from handler.api.protocols.messages import CountTokensRequest, MessagesRequest, as_chat_request
from handler.engine.chat import prompt_tokens


class TokenCount(msgspec.Struct, kw_only=True):
    input_tokens: int


class MessagesController(Controller):
    path = "/v1/messages"
    tags = ["messages"]
    exception_handlers = {HTTPException: anthropic_error_handler, Exception: anthropic_error_handler}

    @post(status_code=200, responses=ANTHROPIC_ERROR_RESPONSES,
          summary="Create a message (Anthropic's Messages API; `stream: true` for events)")
    async def create(self, data: JSONBody[MessagesRequest], request: Request[Any, Any, Any], calls: CallsDep,
                     settings: SettingsDep) -> Response[Any] | Stream:
        return await answer_chat(as_chat_request(data), request, calls, settings, route="messages",
                                 shaper=MessageShaper, stream=data.stream)

    @post("/count_tokens", status_code=200, responses=ANTHROPIC_ERROR_RESPONSES,
          summary="Count a Messages request's input tokens: its prompt exactly as /v1/messages renders it")
    async def count_tokens(self, data: JSONBody[CountTokensRequest], request: Request[Any, Any, Any],
                           calls: CallsDep) -> Response[TokenCount]:
        chat = as_chat_request(data)
        plan = await plan_chat(chat)
        async with calls.open(request, data.model, "chat", route="count_tokens") as call:
            _, tokens = await prompt_tokens(call.chat_model, chat_input(chat, plan))
            return call.respond(TokenCount(input_tokens=len(tokens)))
