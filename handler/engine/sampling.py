"""A request's sampler chain, built the way llama-cpp-python's `Llama` builds it (same order), so a
request decodes to the same tokens whichever engine runs it."""

from __future__ import annotations

import random

from llama_cpp._internals import LlamaModel, LlamaSampler
from llama_cpp.llama_grammar import LlamaGrammar

from handler.engine.types import SamplingParams

PENALTY_WINDOW = 64  # tokens the repetition penalties look back over (llama-cpp-python's default)


def is_plain_greedy(params: SamplingParams, grammar: LlamaGrammar | None) -> bool:
    """Whether the chain would be only a greedy pick (no bias, penalties or grammar changing a logit):
    the engine then takes the largest logit itself, with no candidate list of the whole vocabulary."""
    return (params.temperature <= 0 and grammar is None and not params.logit_bias and params.repeat_penalty == 1
            and params.presence_penalty == 0 and params.frequency_penalty == 0)


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
