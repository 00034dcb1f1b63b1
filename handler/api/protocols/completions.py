"""Wire schemas of POST /v1/completions (legacy completions), as OpenAI's API reference defines them."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from handler.api.protocols.chat import MAX_CHOICES, Penalty, Probability, StreamOptions, TokenId, UsageOut

MAX_PROMPTS = 64
TokenList = Annotated[list[Annotated[int, Meta(ge=0)]], Meta(min_length=1)]
# msgspec allows one array type per union: the list's item shapes are checked in the route.
Prompt = str | Annotated[list[str | int | TokenList], Meta(min_length=1, max_length=1 << 20)]


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: Prompt
    suffix: str | None = None
    max_tokens: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None  # 0: the prompt only (echo)
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Probability | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool = False
    stop: Annotated[str, Meta(min_length=1)] | Annotated[list[str], Meta(max_length=16)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0, le=10.0)] | None = None
    logit_bias: dict[TokenId, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    seed: int | None = None
    best_of: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] | None = None
    user: str | None = None


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float | None]  # a prompt's first token (echo) has none
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: Literal["text_completion"] = "text_completion"
    usage: UsageOut | None = None
    system_fingerprint: str | None = None
