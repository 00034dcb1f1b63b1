"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import Stream

from handler.api.chat_mapping import chat_request, complete, sampling_params, stream_chunks
from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.dependencies import CacheDep, CatalogDep, LifecycleDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.metrics import metered_chat
from handler.api.serving import close_after, describe_request, open_scope
from handler.api.tool_choice import resolve_tools
from handler.engine.chat import start_chat

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a chat completion (OpenAI-compatible; `stream: true` for SSE)")
    async def create(self, data: ChatCompletionRequest, request: Request[Any, Any, Any], catalog: CatalogDep,
                     cache: CacheDep, settings: SettingsDep,
                     lifecycle: LifecycleDep) -> Response[ChatCompletion] | Stream:
        spec = await catalog.find(data.model)
        tools, grammar = await asyncio.to_thread(resolve_tools, data)  # grammar conversion takes a while
        params = sampling_params(data, default_temperature=settings.temperature,
                                 default_max_tokens=settings.max_tokens, grammar=grammar)
        began = time.perf_counter()
        scope = await open_scope(request, lifecycle, cache, spec, "chat")
        streaming = False  # once the stream holds the scope, it releases it when it ends
        try:
            summary = describe_request(request, scope, spec.name)
            # A client that leaves while waiting for a slot gives its place up (and its generation).
            chat = chat_request(data, params, tools)
            started = await scope.client.unless_gone(start_chat(scope.lease.chat_model, chat))
            events = metered_chat(started.events(), spec.name, summary, began)
            if data.stream:
                include_usage = bool(data.stream_options and data.stream_options.include_usage)
                body = close_after(scope, stream_chunks(events, spec.name, include_usage=include_usage))
                streaming = True
                return Stream(body, media_type="text/event-stream", headers={**SSE_HEADERS, **scope.headers()})
            completion = await scope.client.unless_gone(complete(events, spec.name))
            return Response(completion, headers=scope.headers())
        finally:
            if not streaming:
                scope.close()
