"""A chat completion from request to response: the one method the chat route calls.

Find the model, check tools and schemas (off the loop), open the request's scope (lease, cold start,
client watch), decide sampling, wait for slots (one generation per choice of `n`), then answer as
JSON or as a stream."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from litestar import Request, Response
from litestar.response import Stream

from handler.api.chat_mapping import (
    chat_request,
    check_choices,
    complete,
    sampling_request,
    server_sampling,
    stream_chunks,
)
from handler.api.chat_protocol import ChatCompletion, ChatCompletionRequest
from handler.api.serving import RequestScope, close_after, open_scope
from handler.api.streams import merged
from handler.api.tool_choice import ToolPlan, plan_tools
from handler.engine.cache import ModelCache
from handler.engine.chat import StartedChat, start_chats
from handler.engine.types import resolve_sampling
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
        scope, started = await self.begin(data, request)
        scope.prefix_from_volume(started[0].generation.restored_tokens)
        streaming = False  # once the stream holds the scope, it releases it when it ends
        try:
            events = scope.observe_chat(merged([chat.events() for chat in started]))
            if data.stream:
                include_usage = bool(data.stream_options and data.stream_options.include_usage)
                body = close_after(scope, stream_chunks(events, scope.model, include_usage=include_usage,
                                                        choices=data.n, logprobs=bool(data.logprobs)))
                streaming = True
                return Stream(body, media_type="text/event-stream", headers={**SSE_HEADERS, **scope.headers()})
            completion = await scope.client.unless_gone(complete(events, scope.model, choices=data.n,
                                                                 logprobs=bool(data.logprobs)))
            return Response(completion, headers=scope.headers())
        finally:
            if not streaming:
                scope.close()

    async def begin(self, data: ChatCompletionRequest,
                    request: Request[Any, Any, Any]) -> tuple[RequestScope, list[StartedChat]]:
        """The request's scope, and its replies started (a slot each): the caller closes the scope."""
        check_choices(data)
        spec = await self.catalog.find(data.model)
        plan = await asyncio.to_thread(plan_tools, data)  # walks every schema
        scope = await open_scope(request, self.lifecycle, self.cache, spec, "chat")
        try:
            # A client that leaves while waiting for a slot gives its place up (and its generation).
            return scope, await scope.client.unless_gone(self._start(scope, data, plan))
        except BaseException:
            scope.close()
            raise

    async def _start(self, scope: RequestScope, data: ChatCompletionRequest, plan: ToolPlan) -> list[StartedChat]:
        model = scope.lease.chat_model
        params = resolve_sampling(sampling_request(data), model_seed=model.options.seed,
                                  server=server_sampling(self.settings))
        return await start_chats(model, attrs.evolve(chat_request(data, params, plan), tenant=scope.tenant))
