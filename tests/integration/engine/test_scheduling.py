"""Fair scheduling with the real demo model, observed through the engine's step hook (no timing
assertions): while a long prompt prefills, every running stream still gets a token in every step."""

from __future__ import annotations

import asyncio

from handler.engine.batching import BatchingChatModel
from handler.engine.chat import start_chat
from handler.engine.llama_options import ModelOptions
from handler.engine.step_budget import FIRST_GUESS_PREFILL, MIN_PREFILL
from handler.engine.types import ChatRequest, SamplingParams
from handler.formats.chat_format import ChatInput
from tests.support.demo import end_of_turn_bias
from tests.support.devices import GPU_LAYERS

LONG_PROMPT = "Summarise this. " + " ".join(f"Item {index} is a small blue stone." for index in range(60))


def _model(demo_model_path, steps, **options):
    settings = {"n_ctx": 1024, "n_batch": 512, "n_threads": 2, "n_gpu_layers": GPU_LAYERS, "n_parallel": 2, **options}
    return BatchingChatModel("fair", demo_model_path, ModelOptions(**settings), on_step=steps.append)


def _request(text, max_tokens):
    bias = {int(token): value for token, value in end_of_turn_bias().items()}
    return ChatRequest(chat=ChatInput([{"role": "user", "content": text}]),
                       params=SamplingParams(max_tokens=max_tokens, temperature=0, logit_bias=bias))


async def _drain(started):
    async for _ in started.events():
        pass


def test_a_running_stream_gets_a_token_in_every_step_while_a_long_prompt_prefills(demo_model_path):
    steps = []
    # A 1 ms target is below any real step: the budget gives prefill its minimum whenever a stream runs.
    model = _model(demo_model_path, steps, step_target_ms=1)
    try:
        async def scenario():
            running = await start_chat(model, _request("Count slowly to one hundred.", max_tokens=200))
            drain = asyncio.ensure_future(_drain(running))
            while not any(step.decoded for step in steps):  # the stream is generating
                await asyncio.sleep(0.01)
            joining = await start_chat(model, _request(LONG_PROMPT, max_tokens=2))
            await _drain(joining)
            await drain
            return joining

        asyncio.run(scenario())
    finally:
        model.close()
    running_seq = next(step.decoded[0] for step in steps if step.decoded)
    prefill_steps = [step for step in steps if any(seq != running_seq for seq in step.prefilled)]
    assert len(prefill_steps) > 3  # the long prompt was spread over many steps...
    for step in prefill_steps:
        assert running_seq in step.decoded  # ...and the running stream advanced in every one of them
        assert sum(step.prefilled.values()) <= max(FIRST_GUESS_PREFILL, MIN_PREFILL)
    assert any(step.token_gaps for step in steps)


def test_a_lone_long_prompt_prefills_in_full_batches(demo_model_path):
    steps = []
    model = _model(demo_model_path, steps, n_batch=128, step_target_ms=1)
    try:
        async def scenario():
            await _drain(await start_chat(model, _request(LONG_PROMPT, max_tokens=1)))

        asyncio.run(scenario())
    finally:
        model.close()
    prefills = [sum(step.prefilled.values()) for step in steps if step.prefilled]
    assert prefills[:-1] and all(size == 128 for size in prefills[:-1])  # nothing else runs: whole batches
