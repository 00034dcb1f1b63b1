"""Sequences sampled in llama.cpp's graph (forced on here; on a CPU it is off by default): greedy ones
give the replies the host's argmax gives, beside requests the host samples (seeded, log probabilities)
in the same steps; unseeded draws are drawn there too."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from handler.engine import device_sampling, devices
from handler.engine.batching import SCORED_ROWS, BatchingChatModel
from handler.engine.chat import start_chat, start_chats
from handler.engine.completion import start_completions
from handler.engine.llama_options import ModelOptions
from handler.engine.types import ChatRequest, PromptChoices, SamplingParams
from handler.formats.chat_format import ChatInput
from tests.support.devices import GPU_LAYERS

# Forced on here; where the installed build's GPU is of a backend it is not on by default for, it is off.
pytestmark = pytest.mark.skipif(
    devices.has_gpu() and not devices.gpu_backends() <= device_sampling.DEFAULT_BACKENDS,
    reason="llama.cpp's backend samplers corrupted memory on this GPU backend (device_sampling.DEFAULT_BACKENDS)")

PROMPTS = ["Name three fruits.", "What is the capital of France?", "Write a haiku about rain.",
           "Explain gravity in one sentence."]


def _options(device_sampling: bool) -> ModelOptions:
    return ModelOptions(n_ctx=1024, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=4,
                        device_sampling=device_sampling)


@pytest.fixture(scope="module")
def models(demo_model_path):
    host = BatchingChatModel("host", demo_model_path, _options(False))
    device = BatchingChatModel("device", demo_model_path, _options(True))
    yield host, device
    host.close()
    device.close()


def _request(prompt: str, logprobs: int | None = None, **params) -> ChatRequest:
    return ChatRequest(chat=ChatInput([{"role": "user", "content": prompt}]), logprobs=logprobs,
                       params=SamplingParams(max_tokens=24, **{"temperature": 0, **params}))


async def _reply(model: BatchingChatModel, request: ChatRequest) -> tuple[str, int]:
    started = await start_chat(model, request)
    text, tokens = "", 0
    async for event in started.events():
        text += event.delta.content if event.delta is not None and event.delta.content else ""
        tokens += len(event.logprobs)
    return text, tokens


def _replies(model: BatchingChatModel, requests: list[ChatRequest]) -> list[tuple[str, int]]:
    async def together():
        return await asyncio.gather(*(_reply(model, request) for request in requests))

    return asyncio.run(together())


def test_greedy_replies_are_the_same_on_the_device(models):
    host, device = models
    requests = [_request(prompt) for prompt in PROMPTS]
    assert _replies(device, requests) == _replies(host, requests)
    assert all(slot.on_device for slot in device.slots) and not any(slot.on_device for slot in host.slots)


def test_host_sampled_requests_share_steps_with_device_greedy_ones(models):
    host, device = models
    requests = [_request(PROMPTS[0]), _request(PROMPTS[1], temperature=0.8, seed=7),
                _request(PROMPTS[2], logprobs=2), _request(PROMPTS[3])]
    on_device, on_host = _replies(device, requests), _replies(host, requests)
    assert on_device == on_host
    assert on_device[2][1] > 0  # the log probabilities came from the host's copy of the logits
    assert sum(slot.on_device for slot in device.slots) == 2


def test_prompts_scored_together_stay_within_the_steps_output_rows(models):
    """Two prompts scored for their log probabilities at once: a step computes at most SCORED_ROWS of
    their rows together, which is what a device-sampling context reserves room for."""
    _, device = models
    text = " ".join(f"word{n}" for n in range(150))
    prompts = [device.tokenize(text), device.tokenize(text.upper())]
    assert min(len(prompt) for prompt in prompts) > SCORED_ROWS

    async def scored():
        started = await start_completions(device, [PromptChoices(prompt, [SamplingParams(max_tokens=1, temperature=0)])
                                                   for prompt in prompts], prompt_logprobs=1)
        scores = []
        for reply in started:
            async for event in reply.events():
                if event.prompt_logprobs is not None:
                    scores.append(len(event.prompt_logprobs.entries))
        return scores

    assert asyncio.run(scored()) == [len(prompt) - 1 for prompt in prompts]


def test_a_slot_goes_back_to_the_device_after_a_host_sampled_request(demo_model_path):
    """One slot serves greedy, then seeded, then greedy requests: its device sampler is detached and a
    new one attached. llama.cpp initialises a sampler chain on the backend once only; attaching the
    same chain again aborted the process (`llama_sampler_chain_backend_init() called twice`)."""
    options = ModelOptions(n_ctx=1024, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=1,
                           device_sampling=True)
    model = BatchingChatModel("one-slot", demo_model_path, options)
    try:
        requests = [_request(PROMPTS[0]), _request(PROMPTS[1], temperature=0.8, seed=7), _request(PROMPTS[0]),
                    _request(PROMPTS[2], logprobs=1), _request(PROMPTS[0]), _request(PROMPTS[3], temperature=0.9),
                    _request(PROMPTS[3], temperature=0.9), _request(PROMPTS[3], temperature=0.5, top_p=0.8),
                    _request(PROMPTS[1], temperature=0.8, seed=7), _request(PROMPTS[0])]
        replies, placed = [], []
        for request in requests:
            replies.append(_replies(model, [request])[0])
            placed.append(model.slots[0].on_device)
    finally:
        model.close()
    assert replies[0] == replies[2] == replies[4] == replies[9] and replies[0][0]
    assert replies[1] == replies[8] and replies[3][1] > 0
    assert placed == [True, False, True, False, True, True, True, True, False, True]


def test_an_unseeded_draw_is_drawn_on_the_device(models):
    """The API's default request (a temperature, no seed) needs no logits on the host. With top-k 1 the
    draw can only take the largest logit, so its reply is the greedy one."""
    host, device = models
    drawn = [_request(prompt, temperature=0.8, top_k=1) for prompt in PROMPTS]
    assert _replies(device, drawn) == _replies(host, [_request(prompt) for prompt in PROMPTS])
    assert all(slot.on_device for slot in device.slots)


def test_choices_of_one_prompt_draw_their_first_token_on_the_host(models):
    """Sibling choices sample their first token from the leader's logits row; drawn on the device, every
    choice would begin with the token the leader's chain drew."""
    _, device = models
    _replies(device, [_request(prompt) for prompt in PROMPTS])  # every slot greedy, on the device

    async def choices():
        started = await start_chats(device, attrs.evolve(_request(PROMPTS[2], temperature=0.9), choices=3))
        return [[event async for event in chat.events()] for chat in started]

    replies = asyncio.run(choices())
    assert len(replies) == 3 and all(reply[-1].finish_reason is not None for reply in replies)
    assert sum(not slot.on_device for slot in device.slots) == 3  # the slots that served the choices
