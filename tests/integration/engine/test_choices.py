"""`n` > 1 on the real demo model: every choice decodes with its prompt, whatever the first choice did;
what the request reused is the request's; a request waiting when its model closes hears so at once;
and one tenant's prompt state is never reused for another's."""

from __future__ import annotations

import asyncio

import pytest

from handler.engine.batching import BatchingChatModel
from handler.engine.llama_options import ModelOptions
from handler.engine.types import PromptChoices, QueueLimits, SamplingParams
from handler.errors import ServiceUnavailable
from tests.support.demo import end_of_turn_bias
from tests.support.devices import GPU_LAYERS

PROMPT = "The best way to learn is"
NEVER_ENDS = {int(token): bias for token, bias in end_of_turn_bias().items()}


def _model(path, **overrides):
    options = {"n_ctx": 1024, "n_batch": 512, "n_threads": 2, "n_gpu_layers": GPU_LAYERS, "n_parallel": 2, **overrides}
    return BatchingChatModel("choices", path, ModelOptions(**options), QueueLimits(max_waiting=8, timeout_s=600))


async def _text(generation):
    return "".join([chunk.text async for chunk in generation.chunks()])


def _greedy(max_tokens, **more):
    return SamplingParams(max_tokens=max_tokens, temperature=0, **more)


def _alone(path, text, max_tokens=6):
    """The greedy reply of a model that has read nothing else."""
    fresh = _model(path)
    try:
        async def reply():
            return await _text(await fresh.start_generation(fresh.tokenize(text, add_bos=False), _greedy(max_tokens)))
        return asyncio.run(reply())
    finally:
        fresh.close()


def test_a_choice_never_decodes_without_its_prompt_when_the_first_one_ends_at_once(demo_model_path):
    """The first choice ends on its first token, so its slot is free as the others start: one copies its
    cells into the other slot, the last takes its slot as it is. Before, a choice could be "copied" from
    that slot into itself (llama.cpp ignores such a copy): it was wiped and decoded from an empty
    context, and a later prompt reused that broken state."""
    model = _model(demo_model_path)
    try:
        async def scenario():
            tokens = model.tokenize(PROMPT, add_bos=False)
            generations = await model.start_generations([PromptChoices(tokens, [_greedy(1), _greedy(6), _greedy(6)])])
            texts = [await _text(generation) for generation in generations]
            after = await _text(await model.start_generation(model.tokenize(PROMPT + " by", add_bos=False),
                                                             _greedy(6)))
            return texts, after

        texts, after = asyncio.run(scenario())
    finally:
        model.close()
    alone = _alone(demo_model_path, PROMPT)
    assert texts[1:] == [alone, alone] and alone.startswith(texts[0])
    assert after == _alone(demo_model_path, PROMPT + " by")


def test_every_choice_reports_what_the_request_reused(demo_model_path):
    """The prompt is read once, by the first choice: the others report its reuse, not 0 (chat's usage
    took whichever choice ended first)."""
    model = _model(demo_model_path, n_parallel=3)
    try:
        async def scenario():
            tokens = model.tokenize(PROMPT, add_bos=False)
            await _text(await model.start_generation(tokens, _greedy(2)))
            generations = await model.start_generations([PromptChoices(tokens, [_greedy(4), _greedy(1), _greedy(2)])])
            for generation in generations:
                await _text(generation)
            return len(tokens), [generation.cached_tokens for generation in generations]

        prompt_tokens, cached = asyncio.run(scenario())
    finally:
        model.close()
    assert cached == [prompt_tokens - 1] * 3


def test_a_request_waiting_when_its_model_closes_hears_so_at_once(demo_model_path):
    """Before, its generation was told, but the wait for its turn went on until QUEUE_TIMEOUT_S (600 s here)."""
    model = _model(demo_model_path, n_parallel=1)

    async def scenario():
        running = await model.start_generation(model.tokenize("Tell me a long story."),
                                               _greedy(2000, logit_bias=NEVER_ENDS))
        waiting = asyncio.ensure_future(model.start_generation(model.tokenize("Say hi."), _greedy(4)))
        while not model.waiting:  # bounded by the guard below
            await asyncio.sleep(0.01)
        model.close()
        try:
            return await asyncio.wait_for(waiting, 120)
        except ServiceUnavailable as exc:
            return exc
        finally:
            await _text(running)

    outcome = asyncio.run(scenario())
    model.join(30)
    assert isinstance(outcome, ServiceUnavailable) and outcome.code == "model_unloaded"


def test_a_closed_model_refuses_new_requests_at_once(demo_model_path):
    model = _model(demo_model_path)
    tokens = model.tokenize("Hi")
    model.close()
    model.join(30)

    async def ask():
        return await asyncio.wait_for(model.start_generation(tokens, _greedy(2)), 60)

    with pytest.raises(ServiceUnavailable):
        asyncio.run(ask())


def test_a_tenant_never_reuses_another_tenants_prompt(demo_model_path):
    model = _model(demo_model_path)
    try:
        async def cached(tenant):
            generation = await model.start_generation(model.tokenize(PROMPT, add_bos=False), _greedy(2),
                                                      tenant=tenant)
            await _text(generation)
            return generation.cached_tokens

        async def scenario():
            return [await cached(tenant) for tenant in ("alice", "bob", "alice", "bob")]

        reused = asyncio.run(scenario())
    finally:
        model.close()
    assert reused[:2] == [0, 0] and reused[2] > 0 and reused[3] > 0


def test_a_closed_model_refuses_to_tokenize_instead_of_crashing(demo_model_path):
    """A request that tokenizes as its model is unloaded gets a 503; before, it read the freed
    vocabulary and the process died (a segmentation fault)."""
    model = _model(demo_model_path)
    model.close()
    model.join(30)
    for use in (lambda: model.tokenize("Hi"), lambda: model.detokenize([1, 2]),
                lambda: model.special_tokens(("<|im_start|>",)), lambda: model.compile_grammar('root ::= "a"')):
        with pytest.raises(ServiceUnavailable):
            use()
