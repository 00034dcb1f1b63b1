"""POST /v1/chat/completions."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.response import Stream

from handler.api.chat_mapping import chat_request, complete, sampling_params, stream_chunks
from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.tool_choice import resolve_tools
from handler.api.dependencies import CacheDep, CatalogDep, SettingsDep
from handler.engine.chat import prepare_chat

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post(summary="Create a chat completion (OpenAI-compatible; `stream: true` for SSE)",
          status_code=200, responses=None)
    async def create(self, data: ChatCompletionRequest, catalog: CatalogDep, cache: CacheDep,
                     settings: SettingsDep) -> Response[ChatCompletion] | Stream:
        spec = catalog.get(data.model)
        tools, grammar = resolve_tools(data)
        params = sampling_params(data, default_temperature=settings.temperature,
                                 default_max_tokens=settings.max_tokens, grammar=grammar)
        model = await cache.chat_model(spec)
        prepared = await prepare_chat(model, chat_request(data, params, tools))
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return Stream(stream_chunks(prepared, spec.name, include_usage=include_usage),
                          media_type="text/event-stream", headers=SSE_HEADERS)
        return Response(await complete(prepared, spec.name))
