"""POST /v1/responses (stateless): OpenAI's Responses API on the chat engine.

The request becomes a chat completion request (`protocols.responses`), runs exactly as chat does
(same checks, formats, queue), and its parsed reply becomes output items (`answers.responses`): a
JSON response, or the official stream of events."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.answers.responses import ResponseShaper
from handler.api.chat_requests import answer_chat
from handler.api.dependencies import CallsDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.protocols.responses import ResponsesRequest, as_chat_request


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["responses"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a model response (OpenAI's Responses API, stateless; `stream: true` for events)")
    async def create(self, data: JSONBody[ResponsesRequest], request: Request[Any, Any, Any], calls: CallsDep,
                     settings: SettingsDep) -> Response[Any] | Stream:
        return await answer_chat(as_chat_request(data), request, calls, settings, route="responses",
                                 shaper=lambda model: ResponseShaper(data, model), stream=data.stream)
