"""POST /tokenize and /detokenize (the shapes vLLM serves): a prompt, or a chat conversation exactly
as the chat route would send it to the model, as token ids; and token ids back to text."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from msgspec import Meta

from handler.api.calls import ModelCall
from handler.api.chat_requests import check_continuation, enable_thinking, message_dict
from handler.api.dependencies import CallsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.protocols.chat import ChatMessage, Tool
from handler.engine.chat import prompt_tokens
from handler.errors import InvalidRequest
from handler.formats.chat_format import ChatInput, ToolUse

MAX_TOKENS_IN = 1 << 20


class TokenizeRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Meta(min_length=1)] | None = None
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False  # as on the chat route: the prompt ends inside the final message
    add_special_tokens: bool = True  # prompts only: the model's BOS, if it wants one
    chat_template_kwargs: dict[str, Any] | None = None


class TokenizeResponse(msgspec.Struct, kw_only=True):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    tokens: Annotated[list[Annotated[int, Meta(ge=0)]], Meta(max_length=MAX_TOKENS_IN)]


class DetokenizeResponse(msgspec.Struct, kw_only=True):
    prompt: str


def _chat_input(data: TokenizeRequest, messages: list[ChatMessage]) -> ChatInput:
    thinking = enable_thinking(data.chat_template_kwargs)
    if data.continue_final_message:
        check_continuation(messages, thinking=thinking)
    tools = tuple(msgspec.to_builtins(tool) for tool in data.tools or ())
    return ChatInput([message_dict(message) for message in messages], ToolUse(tools), enable_thinking=thinking,
                     add_generation_prompt=data.add_generation_prompt,
                     continue_final=data.continue_final_message)


async def _tokenize(data: TokenizeRequest, call: ModelCall) -> TokenizeResponse:
    if (data.prompt is None) == (data.messages is None):
        raise InvalidRequest("send either prompt or messages", param="prompt")
    if data.messages is not None:
        if call.spec.kind != "chat":
            raise InvalidRequest("messages need a chat model", param="messages")
        _, tokens = await prompt_tokens(call.chat_model, _chat_input(data, data.messages))
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=call.chat_model.n_ctx)
    if call.spec.kind == "chat":
        model = call.chat_model
        tokens = await asyncio.to_thread(model.tokenize, data.prompt or "", add_bos=data.add_special_tokens)
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=model.n_ctx)
    embedder = call.embedding_model
    tokens = await asyncio.to_thread(embedder.tokenize, data.prompt or "")
    return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=embedder.max_input_tokens)


class TokenizerController(Controller):
    tags = ["tokenizer"]

    @post("/tokenize", status_code=200, responses=ERROR_RESPONSES,
          summary="Tokenize a prompt, or a chat conversation exactly as /v1/chat/completions sends it")
    async def tokenize(self, data: JSONBody[TokenizeRequest], request: Request[Any, Any, Any],
                       calls: CallsDep) -> Response[TokenizeResponse]:
        async with calls.open(request, data.model, None, route="tokenize") as call:
            return call.respond(await _tokenize(data, call))

    @post("/detokenize", status_code=200, responses=ERROR_RESPONSES, summary="Token ids back to text")
    async def detokenize(self, data: JSONBody[DetokenizeRequest], request: Request[Any, Any, Any],
                         calls: CallsDep) -> Response[DetokenizeResponse]:
        async with calls.open(request, data.model, None, route="detokenize") as call:
            model = call.chat_model if call.spec.kind == "chat" else call.embedding_model
            if any(token >= model.n_vocab for token in data.tokens):
                raise InvalidRequest(f"token ids must be below the vocabulary size, {model.n_vocab}", param="tokens")
            return call.respond(DetokenizeResponse(prompt=await asyncio.to_thread(model.detokenize, data.tokens)))
