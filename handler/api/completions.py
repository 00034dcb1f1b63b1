"""POST /v1/completions: legacy text completions on chat models' engines (base models' natural route).

Every prompt × `n` choice is its own generation on the model's batching engine (they decode
together); a stream interleaves their chunks, each tagged with its choice's `index`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import attrs
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.chat_mapping import cut_short, logit_bias, server_sampling, stop_strings
from handler.api.chat_protocol import PromptTokensDetails, UsageOut
from handler.api.chat_service import SSE_HEADERS
from handler.api.completions_protocol import (
    MAX_PROMPTS,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from handler.api.dependencies import CacheDep, CatalogDep, LifecycleDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES, error_body
from handler.api.serving import RequestScope, close_after, open_scope
from handler.api.sse import DONE, sse_event
from handler.api.streams import merged
from handler.engine.batching import BatchingChatModel
from handler.engine.completion import fill_in_the_middle, start_completions
from handler.engine.generation import Generation
from handler.engine.types import (
    PromptChoices,
    SamplingParams,
    SamplingRequest,
    TextChunk,
    for_choice,
    resolve_sampling,
)
from handler.errors import InvalidRequest
from handler.settings import Settings

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this route


@attrs.frozen
class Prompt:
    tokens: list[int]
    echo: str  # the prompt as text, for `echo`


def _prompt_items(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [raw]
    if all(isinstance(item, int) for item in raw):
        return [raw]
    if all(isinstance(item, str) for item in raw) or all(isinstance(item, list) for item in raw):
        if len(raw) > MAX_PROMPTS:
            raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
        return list(raw)
    raise InvalidRequest("prompt must be a string, a list of strings, a token array or a list of token arrays",
                         param="prompt")


def _prompts(model: BatchingChatModel, data: CompletionRequest) -> list[Prompt]:
    """Each prompt's tokens (blocking: tokenizing)."""
    prompts = []
    for item in _prompt_items(data.prompt):
        if isinstance(item, str):
            if data.suffix is not None:
                tokens = fill_in_the_middle(model, model.tokenize(item, add_bos=False),
                                            model.tokenize(data.suffix, add_bos=False))
            else:
                tokens = model.tokenize(item)
            prompts.append(Prompt(tokens, item))
        else:
            if data.suffix is not None:
                raise InvalidRequest("suffix needs the prompt as text", param="suffix")
            tokens = [token for token in item if 0 <= token < model.n_vocab]
            prompts.append(Prompt(list(item), model.detokenize(tokens) if data.echo else ""))
    return prompts


def _check(data: CompletionRequest) -> None:
    if data.best_of is not None and data.best_of != data.n:
        raise InvalidRequest("best_of other than n is not supported", param="best_of")
    if data.echo and data.logprobs is not None:
        raise InvalidRequest("echo with logprobs is not supported (prompt tokens have no log probabilities here)",
                             param="echo")


def _params(data: CompletionRequest, model: BatchingChatModel, settings: Settings) -> SamplingParams:
    wanted = SamplingRequest(
        max_tokens=data.max_tokens or DEFAULT_MAX_TOKENS, temperature=data.temperature, top_p=data.top_p,
        top_k=data.top_k, min_p=data.min_p, repeat_penalty=data.repeat_penalty or None,
        presence_penalty=data.presence_penalty, frequency_penalty=data.frequency_penalty, seed=data.seed,
        stop=stop_strings(data.stop), logit_bias=logit_bias(data.logit_bias))
    return resolve_sampling(wanted, model_seed=model.options.seed, server=server_sampling(settings))


async def _start_all(model: BatchingChatModel, data: CompletionRequest, settings: Settings,
                     prompts: Sequence[Prompt], tenant: str) -> list[Generation]:
    """`n` generations per prompt, queued as one request: it waits for its first slot only."""
    params = _params(data, model, settings)
    return await start_completions(model, [
        PromptChoices(prompt.tokens, [for_choice(params, position * data.n + choice) for choice in range(data.n)])
        for position, prompt in enumerate(prompts)], data.logprobs, tenant)


def _legacy_logprobs(chunks: Sequence[TextChunk], offset: int) -> CompletionLogprobs:
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return CompletionLogprobs(tokens=[entry.text for entry in entries],
                              token_logprobs=[entry.logprob for entry in entries],
                              top_logprobs=[{choice.text: choice.logprob for choice in entry.top} for entry in entries],
                              text_offset=offsets)


@attrs.define
class _Tally:
    """What the reply used and how each choice ended, for the usage object, metrics and the log line."""

    scope: RequestScope
    prompt_tokens: int
    readers: Sequence[Generation] = ()  # each prompt's first choice, which reads (or reuses) its prompt
    completion_tokens: int = 0
    reasons: dict[int, str] = attrs.field(factory=dict)
    first_seen: bool = False

    def see(self, index: int, chunk: TextChunk) -> None:
        if not self.first_seen and chunk.text:
            self.first_seen = True
            self.scope.first_token()
        if chunk.finish_reason is not None:
            if chunk.finish_reason == "cancelled":
                raise cut_short()
            self.reasons[index] = chunk.finish_reason
            self.completion_tokens += chunk.completion_tokens

    def usage(self) -> UsageOut:
        return UsageOut(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                        total_tokens=self.prompt_tokens + self.completion_tokens,
                        prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens))

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens not read again (each prompt's KV state kept or restored): known once it started."""
        return sum(reader.cached_tokens for reader in self.readers)

    def finish(self, choices: int) -> None:
        if len(self.reasons) != choices:
            raise cut_short()
        self.scope.finished("completions", self.reasons[0], self.prompt_tokens, self.completion_tokens)


def _new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


async def _collect(data: CompletionRequest, prompts: list[Prompt], chunks: AsyncIterator[tuple[int, TextChunk]],
                   tally: _Tally, name: str) -> Completion:
    by_choice: dict[int, list[TextChunk]] = {}
    async for index, chunk in chunks:
        tally.see(index, chunk)
        by_choice.setdefault(index, []).append(chunk)
    tally.finish(len(prompts) * data.n)
    choices = []
    for index in range(len(prompts) * data.n):
        echo = prompts[index // data.n].echo if data.echo else ""
        parts = by_choice.get(index, [])
        logprobs = _legacy_logprobs(parts, len(echo)) if data.logprobs is not None else None
        choices.append(CompletionChoice(index=index, text=echo + "".join(part.text for part in parts),
                                        finish_reason=tally.reasons[index], logprobs=logprobs))  # type: ignore[arg-type]
    return Completion(id=_new_id(), created=int(time.time()), model=name, choices=choices, usage=tally.usage())


async def _stream(data: CompletionRequest, prompts: list[Prompt], chunks: AsyncIterator[tuple[int, TextChunk]],
                  tally: _Tally, name: str) -> AsyncGenerator[bytes, None]:
    completion_id, created = _new_id(), int(time.time())
    offsets = {index: 0 for index in range(len(prompts) * data.n)}

    def event(choices: list[CompletionChoice], usage: UsageOut | None = None) -> bytes:
        return sse_event(Completion(id=completion_id, created=created, model=name, choices=choices, usage=usage))

    try:
        if data.echo:
            yield b"".join(event([CompletionChoice(index=index, text=prompts[index // data.n].echo,
                                                   finish_reason=None)]) for index in offsets)
            offsets = {index: len(prompts[index // data.n].echo) for index in offsets}
        async for index, chunk in chunks:
            tally.see(index, chunk)
            logprobs = _legacy_logprobs([chunk], offsets[index]) if data.logprobs is not None else None
            offsets[index] += len(chunk.text)
            if chunk.text or chunk.finish_reason is not None:
                yield event([CompletionChoice(index=index, text=chunk.text, logprobs=logprobs,
                                              finish_reason=chunk.finish_reason)])  # type: ignore[arg-type]
        tally.finish(len(offsets))
        if data.stream_options and data.stream_options.include_usage:
            yield event([], tally.usage())
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield sse_event(error_body(exc)[1])
    yield DONE


@attrs.frozen
class CompletionService:
    settings: Settings

    async def respond(self, data: CompletionRequest, scope: RequestScope) -> Response[Completion] | Stream:
        """Answer within `scope`; a stream takes the scope over and closes it when it ends."""
        model = scope.lease.chat_model
        prompts = await asyncio.to_thread(_prompts, model, data)
        generations = await scope.client.unless_gone(_start_all(model, data, self.settings, prompts, scope.tenant))
        tally = _Tally(scope, sum(len(prompt.tokens) for prompt in prompts), readers=generations[::data.n])
        chunks = merged([generation.chunks() for generation in generations])
        if data.stream:
            body = close_after(scope, _stream(data, prompts, chunks, tally, scope.model))
            return Stream(body, media_type="text/event-stream", headers={**SSE_HEADERS, **scope.headers()})
        return Response(await scope.client.unless_gone(_collect(data, prompts, chunks, tally, scope.model)),
                        headers=scope.headers())


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ["completions"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a completion (OpenAI's legacy completions; `stream: true` for SSE)")
    async def create(self, data: JSONBody[CompletionRequest], request: Request[Any, Any, Any], catalog: CatalogDep,
                     cache: CacheDep, settings: SettingsDep, lifecycle: LifecycleDep) -> Response[Completion] | Stream:
        _check(data)
        spec = await catalog.find(data.model)
        scope = await open_scope(request, lifecycle, cache, spec, "chat")
        try:
            response = await CompletionService(settings).respond(data, scope)
        except BaseException:
            scope.close()
            raise
        if not data.stream:
            scope.close()
        return response
