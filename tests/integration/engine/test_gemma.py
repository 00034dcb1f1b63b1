"""A second real architecture: Gemma 3 270M (Q4_K/Q6_K weights, sliding-window attention with a
512-token window, no chat template). A reply at temperature 0 must not depend on what else shares
the batch, on how its prompt was chunked, or on whether its prefix came from the cache."""

from __future__ import annotations

import asyncio

import pytest

from handler.engine.batching import BatchingChatModel
from handler.engine.chat import start_chat
from handler.engine.llama_options import ModelOptions
from handler.engine.step_budget import StepRecord
from handler.engine.types import ChatRequest, SamplingParams
from handler.formats.chat_format import ChatInput
from tests.support.devices import GPU_LAYERS, batch_invariant_on_cpu_only

PROMPTS = ["The capital of France is", "Once upon a time, there was a", "def fibonacci(n):",
           "The three primary colors are"]
# Our own Gemma-style turns (the GGUF has no template): given as the manifest's chat_template would be.
TURNS = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
         "{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LONG_SYSTEM = "You answer questions about this inventory. " + " ".join(
    f"Shelf {n} holds {n * 3} red boxes and {n + 7} blue jars." for n in range(60))


def _options(**overrides):
    return ModelOptions(**{"n_ctx": 2048, "n_batch": 512, "n_threads": 2, "n_gpu_layers": GPU_LAYERS, "n_parallel": 4,
                           "chat_template": TURNS, **overrides})


def _load(path, steps: list[StepRecord] | None = None, **overrides) -> BatchingChatModel:
    return BatchingChatModel("gemma", path, _options(**overrides), on_step=None if steps is None else steps.append)


async def _complete(model: BatchingChatModel, prompt: str, max_tokens: int = 24) -> str:
    generation = await model.start_generation(model.tokenize(prompt), SamplingParams(max_tokens=max_tokens,
                                                                                     temperature=0))
    return "".join([chunk.text async for chunk in generation.chunks()])


async def _logprobs(model: BatchingChatModel, prompt: str, max_tokens: int = 24) -> list[float]:
    """Each generated token's log probability: equal only if the computation was bit for bit the same."""
    generation = await model.start_generation(model.tokenize(prompt), SamplingParams(max_tokens=max_tokens,
                                                                                     temperature=0), logprobs=0)
    return [entry.logprob async for chunk in generation.chunks() for entry in chunk.logprobs]


async def _chat(model: BatchingChatModel, messages: list[dict], max_tokens: int = 16) -> str:
    started = await start_chat(model, ChatRequest(chat=ChatInput(messages),
                                                  params=SamplingParams(max_tokens=max_tokens, temperature=0)))
    return "".join([event.delta.content async for event in started.events() if event.delta is not None])


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    model = _load(gemma_model_path)
    yield model
    model.close()


def test_gemma_is_a_sliding_window_model(gemma):
    assert gemma.n_swa == 512
    assert gemma.model.metadata().get("tokenizer.chat_template") is None


@batch_invariant_on_cpu_only
@pytest.mark.parametrize("flash_attn", [True, False])
def test_batched_outputs_equal_solo_outputs(gemma_model_path, flash_attn):
    """Each phase on a model of its own: the batch reads every prompt in full, as the solo runs did (a
    prompt already cached from its solo run would only decode its last token in the batch)."""
    async def run(together):
        model = _load(gemma_model_path, flash_attn=flash_attn)
        try:
            if together:
                return list(await asyncio.gather(*(_complete(model, prompt) for prompt in PROMPTS)))
            return [await _complete(model, prompt) for prompt in PROMPTS]
        finally:
            model.close()

    alone, together = asyncio.run(run(False)), asyncio.run(run(True))
    assert together == alone
    assert len(set(alone)) == len(PROMPTS)


def test_a_deterministic_model_replies_the_same_whatever_runs_beside_it(gemma_model_path):
    """A long prompt that joins a running stream is prefilled in chunks the step budget sizes (and
    llama.cpp splits a chunk that shares a batch with other sequences); on its own, in whole batches.
    With `deterministic`, both are the same fixed chunks, alone in their batch: the log probabilities
    of the reply, not only its text, are equal to the last bit."""
    model = _load(gemma_model_path, deterministic=True, step_target_ms=1)
    prompt = "Shelf inventory: " + " ".join(f"shelf {n} has {n + 2} jars;" for n in range(40)) + " The total is"
    try:
        async def scenario():
            alone = await _logprobs(model, prompt)
            running = asyncio.create_task(_complete(model, "Once upon a time", max_tokens=400))
            while not any(slot.busy and slot.produced for slot in model.slots):  # it is decoding
                await asyncio.sleep(0.01)
            joined = await _logprobs(model, prompt)
            running.cancel()
            return alone, joined

        alone, joined = asyncio.run(scenario())
    finally:
        model.close()
    assert joined == alone


def _prefilled(steps: list[StepRecord]) -> int:
    return sum(count for step in steps for count in step.prefilled.values())


@pytest.mark.parametrize("swa_full", [True, False])
def test_a_follow_up_turn_reuses_a_prefix_longer_than_the_window(gemma_model_path, swa_full):
    steps: list[StepRecord] = []
    model, fresh = _load(gemma_model_path, steps, swa_full=swa_full), _load(gemma_model_path, swa_full=swa_full)
    system = {"role": "system", "content": LONG_SYSTEM}
    try:
        first = [system, {"role": "user", "content": "What is on shelf 3?"}]
        reply = asyncio.run(_chat(model, first))
        follow_up = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And shelf 5?"}]
        prompt_tokens = len(model.tokenize(model.format.render(ChatInput(follow_up))))
        assert prompt_tokens > 2 * model.n_swa
        steps.clear()
        assert asyncio.run(_chat(model, follow_up)) == asyncio.run(_chat(fresh, follow_up))
    finally:
        model.close()
        fresh.close()
    assert _prefilled(steps) < 64  # only the new turn: the window still holds what it needs


@pytest.mark.parametrize("swa_full", [True, False])
def test_a_prefix_the_window_no_longer_covers_is_not_reused(gemma_model_path, swa_full):
    """After a long question, a different one shares only the system prompt; a window-only cache
    has dropped the cells at its end, so the whole prompt is computed again."""
    steps: list[StepRecord] = []
    small = {"swa_full": swa_full, "n_batch": 64}  # a window-only cache then keeps 512 + 64 cells
    model, fresh = _load(gemma_model_path, steps, **small), _load(gemma_model_path, **small)
    system = {"role": "system", "content": LONG_SYSTEM}
    long_question = "Compare these shelves: " + ", ".join(f"shelf {n}" for n in range(100)) + "."
    try:
        asyncio.run(_chat(model, [system, {"role": "user", "content": long_question}]))
        other = [system, {"role": "user", "content": "What is on shelf 3?"}]
        prompt_tokens = len(model.tokenize(model.format.render(ChatInput(other))))
        steps.clear()
        assert asyncio.run(_chat(model, other)) == asyncio.run(_chat(fresh, other))
    finally:
        model.close()
        fresh.close()
    if swa_full:
        assert _prefilled(steps) < 64
    else:
        assert _prefilled(steps) == prompt_tokens
