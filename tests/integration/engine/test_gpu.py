"""On a GPU (`pytest -m gpu` where the installed llama.cpp has a GPU backend): every layer offloaded by
default, and replies the same with the engine's own greedy pick as with llama.cpp's sampler chain.
The rest of the engine and API suites run offloaded there too (tests/support/devices.py)."""

from __future__ import annotations

import asyncio

import pytest

from handler.engine.batching import BatchingChatModel
from handler.engine.chat import start_chat
from handler.engine.devices import default_gpu_layers, devices
from handler.engine.llama_options import ModelOptions
from handler.engine.types import ChatRequest, SamplingParams
from handler.formats.chat_format import ChatInput
from tests.support.devices import needs_gpu

pytestmark = [pytest.mark.gpu, needs_gpu]


def test_every_layer_goes_to_the_gpu_by_default():
    assert default_gpu_layers() == -1 and any(device.is_gpu for device in devices())


def test_greedy_replies_match_the_sampler_chain_offloaded(demo_model_path):
    model = BatchingChatModel("gpu", demo_model_path, ModelOptions(n_ctx=1024, n_batch=512, n_threads=2,
                                                                  n_gpu_layers=-1, n_parallel=4))
    try:
        async def reply(params):  # a chat turn: the demo model ends a bare sentence at once
            started = await start_chat(model, ChatRequest(chat=ChatInput([{"role": "user", "content": "Tell me a story."}]),
                                                          params=params))
            return "".join([event.delta.content async for event in started.events()
                            if event.delta is not None and event.delta.content])

        async def scenario():
            return await asyncio.gather(reply(SamplingParams(max_tokens=24, temperature=0)),
                                        reply(SamplingParams(max_tokens=24, temperature=0, logit_bias={5: 0.0})))

        fast, chain = asyncio.run(scenario())
    finally:
        model.close()
    assert fast == chain and len(fast) > 20
