"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import Stream

from handler.api.chat_mapping import chat_request, complete, sampling_request, stream_chunks
from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.dependencies import CacheDep, CatalogDep, LifecycleDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.serving import close_after, open_scope
from handler.api.tool_choice import plan_tools
from handler.engine.chat import start_chat
from handler.engine.types import ServerSampling, resolve_sampling

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
        plan = await asyncio.to_thread(plan_tools, data)  # grammar conversion takes a while
        wanted = sampling_request(data, plan.grammar)
        scope = await open_scope(request, lifecycle, cache, spec, "chat")
        streaming = False  # once the stream holds the scope, it releases it when it ends
        try:
            model = scope.lease.chat_model
            server = ServerSampling(temperature=settings.temperature, max_tokens=settings.max_tokens)
            params = resolve_sampling(wanted, model_seed=model.options.seed, server=server)
            # A client that leaves while waiting for a slot gives its place up (and its generation).
            started = await scope.client.unless_gone(start_chat(model, chat_request(data, params, plan)))
            events = scope.observe_chat(started.events())
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
