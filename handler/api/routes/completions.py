"""POST /v1/completions: legacy text completions on chat models' engines (base models' natural route).

Every prompt × `n` choice is its own reply on the model's batching engine (they decode together);
`answers.completions` shapes them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from handler.api.answers.completions import CompletionShaper
from handler.api.calls import ModelCalls
from handler.api.chat_requests import logit_bias, server_sampling, stop_strings
from handler.api.dependencies import CallsDep, SettingsDep
from handler.api.errors import ERROR_RESPONSES
from handler.api.protocols.completions import MAX_PROMPTS, Completion, CompletionRequest
from handler.engine.batching import BatchingChatModel
from handler.engine.completion import StartedText, fill_in_the_middle, start_completions
from handler.engine.types import PromptChoices, SamplingParams, SamplingRequest, for_choice, resolve_sampling
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


def _params(data: CompletionRequest, model: BatchingChatModel, settings: Settings) -> SamplingParams:
    wanted = SamplingRequest(
        max_tokens=DEFAULT_MAX_TOKENS if data.max_tokens is None else data.max_tokens,
        temperature=data.temperature, top_p=data.top_p, top_k=data.top_k, min_p=data.min_p,
        repeat_penalty=data.repeat_penalty or None,
        presence_penalty=data.presence_penalty, frequency_penalty=data.frequency_penalty, seed=data.seed,
        stop=stop_strings(data.stop), logit_bias=logit_bias(data.logit_bias))
    return resolve_sampling(wanted, model_seed=model.options.seed, server=server_sampling(settings))


async def _start_all(model: BatchingChatModel, data: CompletionRequest, settings: Settings,
                     prompts: Sequence[Prompt], tenant: str) -> list[StartedText]:
    """`n` replies per prompt, queued as one request: it waits for its first slot only. With echo and
    logprobs, each prompt is scored for its tokens' log probabilities."""
    params = _params(data, model, settings)
    return await start_completions(model, [
        PromptChoices(prompt.tokens, [for_choice(params, position * data.n + choice) for choice in range(data.n)])
        for position, prompt in enumerate(prompts)], data.logprobs, tenant,
        prompt_logprobs=data.logprobs if data.echo else None)


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ["completions"]

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a completion (OpenAI's legacy completions; `stream: true` for SSE)")
    async def create(self, data: JSONBody[CompletionRequest], request: Request[Any, Any, Any], calls: CallsDep,
                     settings: SettingsDep) -> Response[Completion] | Stream:
        return await completion_answer(data, request, calls, settings)


async def completion_answer(data: CompletionRequest, request: Request[Any, Any, Any], calls: ModelCalls,
                            settings: Settings, route: str = "completions") -> Response[Completion] | Stream:
    _check(data)
    async with calls.open(request, data.model, "chat", route=route) as call:
        prompts = await asyncio.to_thread(_prompts, call.chat_model, data)
        started = await call.unless_gone(_start_all(call.chat_model, data, settings, prompts, call.tenant))
        shaper = CompletionShaper(data, [prompt.echo for prompt in prompts], call.model)
        return await call.answer(started, shaper, stream=data.stream, per_prompt=data.n)
