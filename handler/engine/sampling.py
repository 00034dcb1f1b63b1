"""A request's sampler chain, built the way llama-cpp-python's `Llama` builds it (same order), so a
request decodes to the same tokens whichever engine runs it."""

from __future__ import annotations

import random

import attrs
from llama_cpp._internals import LlamaModel, LlamaSampler
from llama_cpp.llama_grammar import LlamaGrammar

from handler.engine.types import SamplingParams

PENALTY_WINDOW = 64  # tokens the repetition penalties look back over (llama-cpp-python's default)


def is_plain_greedy(params: SamplingParams, grammar: LlamaGrammar | None) -> bool:
    """Whether the chain would be only a greedy pick (no bias, penalties or grammar changing a logit):
    the engine then takes the largest logit itself, with no candidate list of the whole vocabulary."""
    return params.temperature <= 0 and _logits_as_computed(params, grammar)


def _logits_as_computed(params: SamplingParams, grammar: LlamaGrammar | None) -> bool:
    return (grammar is None and not params.logit_bias and params.repeat_penalty == 1
            and params.presence_penalty == 0 and params.frequency_penalty == 0)


@attrs.frozen
class DeviceChain:
    """What a sequence's sampler chain does in llama.cpp's graph: a greedy pick (temperature 0), or a
    draw through top-k, top-p, min-p and temperature, each left out where it changes nothing (top-k 0
    or the whole vocabulary, top-p 1, min-p 0), as on the host."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0


GREEDY = DeviceChain()


def device_chain(params: SamplingParams, grammar: LlamaGrammar | None, n_vocab: int,
                 shares_first_row: bool) -> DeviceChain | None:
    """The chain a request's sequence can run on the device, or None where the host must sample it:
    plain greedy, or an unseeded draw (the API's default: temperature 0.7, no seed). A seeded draw stays
    on the host: llama.cpp's device draw walks the candidates in another order, so the same seed would
    give another reply there. So does a draw whose sibling choices sample their first token from its
    logits row (they would all take the token the device drew)."""
    if not _logits_as_computed(params, grammar):
        return None
    if params.temperature <= 0:
        return GREEDY
    if params.seed is not None or shares_first_row:
        return None
    return DeviceChain(temperature=params.temperature, top_k=params.top_k if 0 < params.top_k < n_vocab else 0,
                       top_p=params.top_p if params.top_p < 1 else 1.0, min_p=max(params.min_p, 0.0))


def build_sampler(model: LlamaModel, params: SamplingParams, grammar: LlamaGrammar | None) -> LlamaSampler:
    sampler = LlamaSampler()
    if params.logit_bias:
        sampler.add_logit_bias(model.n_vocab(), params.logit_bias)
    sampler.add_penalties(model.n_vocab(), PENALTY_WINDOW, params.repeat_penalty, params.frequency_penalty,
                          params.presence_penalty)
    if grammar is not None:
        sampler.add_grammar(model, grammar)
    if params.temperature <= 0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_k(params.top_k)  # 0 disables it
    sampler.add_top_p(params.top_p, 1)
    sampler.add_min_p(params.min_p, 1)
    sampler.add_temp(params.temperature)
    sampler.add_dist(params.seed if params.seed is not None else random.getrandbits(32))
    return sampler
