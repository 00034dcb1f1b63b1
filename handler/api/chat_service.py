"""A chat completion from request to response: the one method the chat route calls.

Find the model, check tools and schemas (off the loop), open the request's scope (lease, cold start,
client watch), decide sampling, wait for a slot, then answer as JSON or as a stream."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from litestar import Request, Response
from litestar.response import Stream

from handler.api.chat_mapping import chat_request, complete, sampling_request, stream_chunks
from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.serving import close_after, open_scope
from handler.api.tool_choice import plan_tools
from handler.engine.cache import ModelCache
from handler.engine.chat import start_chat
from handler.engine.types import ServerSampling, resolve_sampling
from handler.lifecycle import Lifecycle
from handler.settings import Settings
from handler.store.catalog import ModelCatalog

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@attrs.frozen
class ChatService:
    catalog: ModelCatalog
    cache: ModelCache
    settings: Settings
    lifecycle: Lifecycle

    async def respond(self, data: ChatCompletionRequest,
                      request: Request[Any, Any, Any]) -> Response[ChatCompletion] | Stream:
        spec = await self.catalog.find(data.model)
        plan = await asyncio.to_thread(plan_tools, data)  # walks every schema
        wanted = sampling_request(data)
        scope = await open_scope(request, self.lifecycle, self.cache, spec, "chat")
        streaming = False  # once the stream holds the scope, it releases it when it ends
        try:
            model = scope.lease.chat_model
            server = ServerSampling(temperature=self.settings.temperature, max_tokens=self.settings.max_tokens)
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
