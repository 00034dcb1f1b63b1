"""Plain values passed between the API layer and the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs

from handler.formats.chat_format import ChatInput

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@attrs.frozen
class QueueLimits:
    """How many requests may wait for a model's turn, and how long a request waits for its first slot
    (its other choices and prompts then follow in turn: the request is being served)."""

    max_waiting: int = 32
    timeout_s: float = 120.0


DEFAULT_QUEUE = QueueLimits()


@attrs.frozen
class Footprint:
    """Bytes a model takes in host memory and in device (GPU) memory: budgeted apart, since running out
    of one is not helped by room in the other."""

    host: int = 0
    device: int = 0

    @property
    def total(self) -> int:
        return self.host + self.device

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(self.host + other.host, self.device + other.device)


# Built-in sampling defaults: what applies when neither the request, the model nor the server sets a
# value (OpenAI's own defaults where it has them: top_p 1, no penalties). The only place they are written.
TEMPERATURE, TOP_P, TOP_K, MIN_P = 0.7, 1.0, 40, 0.05
REPEAT_PENALTY, PRESENCE_PENALTY, FREQUENCY_PENALTY = 1.0, 0.0, 0.0


@attrs.frozen
class SamplingParams:
    """How one generation samples, every value decided (see `resolve_sampling`)."""

    max_tokens: int
    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    top_k: int = TOP_K
    min_p: float = MIN_P
    repeat_penalty: float = REPEAT_PENALTY
    presence_penalty: float = PRESENCE_PENALTY
    frequency_penalty: float = FREQUENCY_PENALTY
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] = attrs.field(factory=dict)


@attrs.frozen
class SamplingRequest:
    """What a request asked for; None where it set nothing."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] = attrs.field(factory=dict)


@attrs.frozen
class ServerSampling:
    """The server environment's sampling defaults (TEMPERATURE, MAX_TOKENS)."""

    temperature: float
    max_tokens: int


def resolve_sampling(request: SamplingRequest, *, model_seed: int | None, server: ServerSampling) -> SamplingParams:
    """The one precedence rule for sampling: the request's value, then the model's (its manifest
    entry), then the server environment's, then the built-in default."""

    def first(*values: Any) -> Any:
        return next(value for value in values if value is not None)

    return SamplingParams(
        max_tokens=first(request.max_tokens, server.max_tokens),
        temperature=first(request.temperature, server.temperature),
        top_p=first(request.top_p, TOP_P), top_k=first(request.top_k, TOP_K), min_p=first(request.min_p, MIN_P),
        repeat_penalty=first(request.repeat_penalty, REPEAT_PENALTY),
        presence_penalty=first(request.presence_penalty, PRESENCE_PENALTY),
        frequency_penalty=first(request.frequency_penalty, FREQUENCY_PENALTY),
        seed=request.seed if request.seed is not None else model_seed,
        stop=request.stop, logit_bias=request.logit_bias,
    )


def for_choice(params: SamplingParams, choice: int) -> SamplingParams:
    """The parameters of choice `choice` of `n`: its own seed, derived from the decided one, so the
    choices differ yet a seeded request reproduces all of them."""
    return params if params.seed is None or choice == 0 else attrs.evolve(params, seed=params.seed + choice)


@attrs.frozen
class TokenChoice:
    """A token the model could have produced at one step, and its log probability."""

    token: int
    text: str  # the token's own bytes as text (a partial UTF-8 character shows as U+FFFD)
    bytes: bytes
    logprob: float


@attrs.frozen
class TokenLogprob:
    """One generated token: the text it added to the reply, and the model's log probabilities (of the
    model's own distribution, before temperature, penalties or grammar) for it and the top choices."""

    text: str  # "" for a token that ends mid-character (the next one completes it)
    bytes: bytes
    logprob: float
    top: tuple[TokenChoice, ...] = ()


@attrs.frozen
class PromptLogprobs:
    """A prompt's tokens with their log probabilities, each given the tokens before it (`echo` with
    `logprobs`): the first token has none, nothing precedes it."""

    first: str  # the first token's text
    entries: tuple[TokenLogprob, ...]  # every later token's


@attrs.frozen
class TextChunk:
    """A piece of generated text; the last chunk of a generation carries `finish_reason` and counts."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens behind `text`, when the request asked for them
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_sequence: str | None = None  # the stop string that ended it (finish_reason "stop")
    prompt_logprobs: PromptLogprobs | None = None  # when asked, before the first generated text


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV state was reused (slot or volume), not read again

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class PromptChoices:
    """One prompt of a request and its choices (`n`): the prompt is read once, by the first choice."""

    tokens: list[int]
    choices: Sequence[SamplingParams]


@attrs.frozen
class ChatRequest:
    """A chat completion as the engine sees it: the checked conversation and how to sample the reply."""

    chat: ChatInput
    params: SamplingParams
    logprobs: int | None = None  # None: none; k: each generated token's and its top k alternatives'
    choices: int = 1  # `n`: replies to the one prompt, each with its own seed (see `for_choice`)
    tenant: str = ""  # whose request (an API key's salt): prompt KV state is reused within a tenant only

    @property
    def choice_params(self) -> list[SamplingParams]:
        return [for_choice(self.params, choice) for choice in range(self.choices)]
