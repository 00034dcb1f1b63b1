"""A chat completion end to end inside the engine: render → tokenize → check → generate → parse.

`start_chat` does everything that can fail because of the request or the load (template errors,
prompt too long, bad grammar, a full queue) and waits for the model's turn before any byte is sent,
so the API layer can still answer with a 4xx/5xx status; `events` then streams parsed deltas and
ends with the finish reason and usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import attrs

from handler.engine.batching import BatchingChatModel, GrammarError
from handler.engine.generation import Generation
from handler.engine.types import ChatRequest, FinishReason, Usage
from handler.errors import ContextLengthExceeded, InvalidRequest
from handler.formats.content import UnsupportedContent
from handler.formats.gguf_template import TemplateRenderError
from handler.formats.qwen3_parser import OutputDelta
from handler.formats.registry import OutputParser


@attrs.frozen
class ChatEvent:
    delta: OutputDelta | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@attrs.define
class StartedChat:
    request: ChatRequest
    parser: OutputParser
    generation: Generation

    async def events(self) -> AsyncIterator[ChatEvent]:
        called_tools = False
        chunks = self.generation.chunks()
        try:
            async for chunk in chunks:
                deltas = self.parser.feed(chunk.text) if chunk.text else []
                if chunk.finish_reason is not None:
                    deltas += self.parser.finish()
                for delta in deltas:
                    if delta.tool_call is not None:
                        if called_tools and not self.request.parallel_tool_calls:
                            continue  # parallel_tool_calls=false: the first call only
                        called_tools = True
                    yield ChatEvent(delta=delta)
                if chunk.finish_reason is not None:
                    finish = "tool_calls" if called_tools and chunk.finish_reason == "stop" else chunk.finish_reason
                    yield ChatEvent(finish_reason=finish,
                                    usage=Usage(chunk.prompt_tokens, chunk.completion_tokens))
        finally:
            await chunks.aclose()


async def start_chat(model: BatchingChatModel, request: ChatRequest) -> StartedChat:
    try:
        prompt = model.format.render(request.messages, request.tools, enable_thinking=request.enable_thinking)
    except UnsupportedContent as exc:
        raise InvalidRequest(str(exc), param="messages", code="unsupported_content") from None
    except TemplateRenderError as exc:
        raise InvalidRequest(str(exc), param="messages") from None
    tokens = await asyncio.to_thread(model.tokenize, prompt)
    if len(tokens) >= model.n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {model.n_ctx} tokens, but the messages take "
            f"{len(tokens)} tokens. Please shorten the messages.", param="messages")
    grammar = None
    if request.params.grammar is not None:
        try:
            grammar = await asyncio.to_thread(model.compile_grammar, request.params.grammar)
        except GrammarError as exc:
            raise InvalidRequest(f"{exc}; check the JSON schemas in tools or response_format",
                                 param="tools" if request.tools else "response_format") from None
    parser = model.format.new_parser(request.tool_names, prompt)
    generation = await model.start_generation(tokens, request.params, grammar)
    return StartedChat(request=request, parser=parser, generation=generation)
