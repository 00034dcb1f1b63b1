"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.chat_service import ChatService
from handler.api.dependencies import CacheDep, CatalogDep, LifecycleDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a chat completion (OpenAI-compatible; `stream: true` for SSE)")
    async def create(self, data: JSONBody[ChatCompletionRequest], request: Request[Any, Any, Any], catalog: CatalogDep,
                     cache: CacheDep, settings: SettingsDep,
                     lifecycle: LifecycleDep) -> Response[ChatCompletion] | Stream:
        return await ChatService(catalog, cache, settings, lifecycle).respond(data, request)
