"""A chat completion end to end inside the engine: plan → tokenize → check → generate → parse.

`start_chat` asks the model's chat format for the request's plan (prompt, output constraint,
parser), and does everything that can fail because of the request or the load (template errors,
prompt too long, bad grammar, a full queue) and waits for the model's turn before any byte is sent,
so the API layer can still answer with a 4xx/5xx status; `events` then streams parsed deltas and
ends with the finish reason and usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import attrs
from llama_cpp.llama_grammar import LlamaGrammar

from handler.engine.batching import BatchingChatModel, GrammarError
from handler.engine.generation import Generation
from handler.engine.grammar import SchemaError, constraint_grammar
from handler.engine.schema_limits import SchemaLimitExceeded, check_grammar
from handler.engine.types import ChatRequest, FinishReason, PromptChoices, PromptLogprobs, TokenLogprob, Usage
from handler.errors import ContextLengthExceeded, InvalidRequest
from handler.formats.chat_format import ChatInput, ChatPlan, ForcedCalls
from handler.formats.content import UnsupportedContent
from handler.formats.gguf_template import TemplateRenderError
from handler.formats.output import OutputDelta, OutputParser


@attrs.frozen
class ChatEvent:
    delta: OutputDelta | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens generated since the previous event, if asked for
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    stop_sequence: str | None = None  # the stop string that ended the reply
    prompt_logprobs: PromptLogprobs | None = None  # raw-text replies that asked, before their text


@attrs.define
class StartedChat:
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
                entries = chunk.logprobs
                for delta in deltas:
                    called_tools = called_tools or delta.tool_call is not None
                    yield ChatEvent(delta=delta, logprobs=entries)
                    entries = ()
                if entries:  # text the parser holds back for now (a tag may be starting)
                    yield ChatEvent(logprobs=entries)
                if chunk.finish_reason is not None:
                    finish = "tool_calls" if called_tools and chunk.finish_reason == "stop" else chunk.finish_reason
                    yield ChatEvent(finish_reason=finish, stop_sequence=chunk.stop_sequence,
                                    usage=Usage(chunk.prompt_tokens, chunk.completion_tokens,
                                                cached_tokens=self.generation.cached_tokens))
        finally:
            await chunks.aclose()


def _plan(model: BatchingChatModel, chat: ChatInput) -> ChatPlan:
    try:
        return model.format.plan(chat)
    except UnsupportedContent as exc:
        raise InvalidRequest(str(exc), param="messages", code="unsupported_content") from None
    except TemplateRenderError as exc:
        raise InvalidRequest(str(exc), param="messages") from None


def _grammar(model: BatchingChatModel, plan: ChatPlan) -> LlamaGrammar | None:
    """The plan's constraint as a grammar llama.cpp accepts (blocking: conversion takes a while)."""
    if plan.constraint is None:
        return None
    param = "tools" if isinstance(plan.constraint, ForcedCalls) else "response_format"
    try:
        gbnf = constraint_grammar(plan.constraint)
        check_grammar(gbnf, param)
        return model.compile_grammar(gbnf)
    except SchemaLimitExceeded as exc:
        raise InvalidRequest(str(exc), param=param, code="schema_too_complex") from None
    except (SchemaError, GrammarError) as exc:
        raise InvalidRequest(f"{exc}; check the JSON schemas in {param}", param=param) from None


async def prompt_tokens(model: BatchingChatModel, chat: ChatInput) -> tuple[ChatPlan, list[int]]:
    """The plan for `chat`, and the tokens its prompt is: exactly what generation would read."""
    plan = _plan(model, chat)
    return plan, await asyncio.to_thread(model.tokenize, plan.prompt)


async def start_chat(model: BatchingChatModel, request: ChatRequest) -> StartedChat:
    (started,) = await start_chats(model, attrs.evolve(request, choices=1))
    return started


async def start_chats(model: BatchingChatModel, request: ChatRequest) -> list[StartedChat]:
    """One reply per choice of `request` (its prompt read once), each with its own parser."""
    plan, tokens = await prompt_tokens(model, request.chat)
    if len(tokens) >= model.n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {model.n_ctx} tokens, but the messages take "
            f"{len(tokens)} tokens. Please shorten the messages.", param="messages")
    grammar = await asyncio.to_thread(_grammar, model, plan)
    generations = await model.start_generations([PromptChoices(tokens, request.choice_params)], grammar,
                                                logprobs=request.logprobs, tenant=request.tenant,
                                                preserved=model.special_tokens(plan.preserved_tokens))
    return [StartedChat(parser=plan.new_parser(), generation=generation) for generation in generations]


async def read_prompt(model: BatchingChatModel, request: ChatRequest) -> StartedChat:
    """Read the request's prompt into a slot and let its (short) reply run out: the prompt's KV state
    stays cached in the slot, and goes to the prefix store when one is set (warm-up's warm prompts)."""
    started = await start_chat(model, request)
    async for _ in started.events():
        pass
    return started
