"""POST /v1/embeddings: string, list of strings, token array or list of token arrays; float or base64."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from msgspec import Meta

from handler.api.calls import ModelCalls
from handler.api.dependencies import CallsDep
from handler.api.errors import ERROR_RESPONSES
from handler.engine.embedding import EmbeddingModel, normalise
from handler.engine.types import Usage
from handler.errors import InvalidRequest

MAX_INPUTS = 2048
# msgspec allows one array type per union: the list's item shapes are checked in `_as_token_lists`.
Text = Annotated[str, Meta(min_length=1)]
TokenIds = Annotated[list[int], Meta(min_length=1)]
EmbeddingInput = Text | Annotated[list[Text | int | TokenIds], Meta(min_length=1, max_length=2048)]


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


class EmbeddingData(msgspec.Struct, kw_only=True):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


def _as_token_lists(raw: EmbeddingInput, model: EmbeddingModel) -> list[list[int]]:
    """Every accepted input shape → one token list per input."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif raw and all(isinstance(item, int) for item in raw):
        items = [raw]
    elif all(isinstance(item, str) for item in raw) or all(isinstance(item, list) for item in raw):
        items = list(raw)
    else:
        raise InvalidRequest("input must be a string, a list of strings, a token array or a list of token "
                             "arrays", param="input")
    if not items or len(items) > MAX_INPUTS:
        raise InvalidRequest(f"input must hold between 1 and {MAX_INPUTS} items", param="input")
    return [model.tokenize(item) if isinstance(item, str) else list(item) for item in items]


def _encode(vector: list[float], dimensions: int | None, encoding: str) -> list[float] | str:
    if dimensions is not None:
        vector = normalise(vector[:dimensions])
    if encoding == "base64":  # little-endian float32, as the openai client decodes it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class EmbeddingsController(Controller):
    path = "/v1/embeddings"
    tags = ["embeddings"]

    @post(summary="Create embeddings (OpenAI-compatible)", status_code=200, responses=ERROR_RESPONSES)
    async def create(self, data: JSONBody[EmbeddingRequest], request: Request[Any, Any, Any],
                     calls: CallsDep) -> Response[EmbeddingResponse]:
        return await embedding_answer(data, request, calls)


async def embedding_answer(data: EmbeddingRequest, request: Request[Any, Any, Any], calls: ModelCalls,
                           route: str = "embeddings") -> Response[EmbeddingResponse]:
    async with calls.open(request, data.model, "embedding", route=route) as call:
        body = await call.unless_gone(_embed(data, call.embedding_model, call.model))
        call.finished("stop", Usage(body.usage.prompt_tokens))
        return call.respond(body)


async def _embed(data: EmbeddingRequest, model: EmbeddingModel, name: str) -> EmbeddingResponse:
    if data.dimensions is not None and data.dimensions > model.dimensions:
        raise InvalidRequest(f"dimensions must be at most {model.dimensions} for this model", param="dimensions")
    inputs = await asyncio.to_thread(_as_token_lists, data.input, model)
    vectors = await model.embed(inputs)
    if any(not math.isfinite(value) for vector in vectors for value in vector):
        raise InvalidRequest("the model produced a non-finite embedding for this input", param="input")
    tokens = sum(len(item) for item in inputs)
    return EmbeddingResponse(
        data=[EmbeddingData(index=i, embedding=_encode(v, data.dimensions, data.encoding_format))
              for i, v in enumerate(vectors)],
        model=name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
