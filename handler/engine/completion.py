"""Raw-text completions (the legacy `/v1/completions` route): a prompt's tokens in, generated text out,
with no chat format in between. The natural route for base models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import attrs
import llama_cpp

from handler.engine.batching import BatchingChatModel
from handler.engine.chat import ChatEvent
from handler.engine.generation import Generation
from handler.engine.types import PromptChoices, PromptLogprobs, Usage
from handler.errors import ContextLengthExceeded, InvalidRequest
from handler.formats.output import OutputDelta


@attrs.define
class StartedText:
    """A raw-text reply: its chunks as events (the text as content), with the prompt's log
    probabilities first when they were asked for."""

    generation: Generation
    prompt_logprobs: PromptLogprobs | None = None  # set once its event has been read

    async def events(self) -> AsyncIterator[ChatEvent]:
        chunks = self.generation.chunks()
        try:
            async for chunk in chunks:
                if chunk.prompt_logprobs is not None:
                    self.prompt_logprobs = chunk.prompt_logprobs
                    yield ChatEvent(prompt_logprobs=chunk.prompt_logprobs)
                    continue
                usage = None if chunk.finish_reason is None else Usage(
                    chunk.prompt_tokens, chunk.completion_tokens, cached_tokens=self.generation.cached_tokens)
                yield ChatEvent(delta=OutputDelta(content=chunk.text) if chunk.text else None, logprobs=chunk.logprobs,
                                finish_reason=chunk.finish_reason, usage=usage, stop_sequence=chunk.stop_sequence)
        finally:
            await chunks.aclose()


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


async def start_completions(model: BatchingChatModel, prompts: Sequence[PromptChoices], logprobs: int | None = None,
                            tenant: str = "", prompt_logprobs: int | None = None) -> list[StartedText]:
    """Check every prompt against the model, then queue them as one request (see `start_generations`):
    one reply per choice of each prompt, in order, each prompt read once (scored for its log
    probabilities with `prompt_logprobs`)."""
    for prompt in prompts:
        _check_prompt(model, prompt.tokens)
    generations = await model.start_generations(prompts, logprobs=logprobs, tenant=tenant,
                                                prompt_logprobs=prompt_logprobs)
    return [StartedText(generation) for generation in generations]


def _check_prompt(model: BatchingChatModel, prompt: list[int]) -> None:
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    if any(not 0 <= token < model.n_vocab for token in prompt):
        raise InvalidRequest(f"token ids must be between 0 and {model.n_vocab - 1}", param="prompt")
    if len(prompt) >= model.n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {model.n_ctx} tokens, but the prompt takes "
            f"{len(prompt)} tokens. Please shorten the prompt.", param="prompt")
