"""Raw-text completions (the legacy `/v1/completions` route): a prompt's tokens in, generated text out,
with no chat format in between. The natural route for base models."""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

from handler.engine.batching import BatchingChatModel
from handler.engine.generation import Generation
from handler.engine.types import PromptChoices
from handler.errors import ContextLengthExceeded, InvalidRequest


def fill_in_the_middle(model: BatchingChatModel, prefix: list[int], suffix: list[int]) -> list[int]:
    """The prompt that asks the model for what goes between `prefix` and `suffix` (prefix-suffix-middle
    order), for models whose vocabulary has fill-in-the-middle tokens."""
    with model.in_use():
        vocab = model.model.vocab
        pre, suf, mid = (llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
                         llama_cpp.llama_vocab_fim_mid(vocab))
    if min(pre, suf, mid) < 0:
        raise InvalidRequest(f"model '{model.name}' has no fill-in-the-middle tokens, so it cannot use suffix",
                             param="suffix", code="suffix_not_supported")
    return [pre, *prefix, suf, *suffix, mid]


async def start_completions(model: BatchingChatModel, prompts: Sequence[PromptChoices],
                            logprobs: int | None = None, tenant: str = "") -> list[Generation]:
    """Check every prompt against the model, then queue them as one request (see `start_generations`):
    one generation per choice of each prompt, in order, each prompt read once."""
    for prompt in prompts:
        _check_prompt(model, prompt.tokens)
    return await model.start_generations(prompts, logprobs=logprobs, tenant=tenant)


def _check_prompt(model: BatchingChatModel, prompt: list[int]) -> None:
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    if any(not 0 <= token < model.n_vocab for token in prompt):
        raise InvalidRequest(f"token ids must be between 0 and {model.n_vocab - 1}", param="prompt")
    if len(prompt) >= model.n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {model.n_ctx} tokens, but the prompt takes "
            f"{len(prompt)} tokens. Please shorten the prompt.", param="prompt")
