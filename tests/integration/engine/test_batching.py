"""The batching engine in-process with the real demo model: batched outputs equal solo outputs,
cancellation frees slots, grammars and free text share a batch, long prompts prefill in chunks,
and a follow-up turn reuses the cached prefix."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from handler.engine.batching import BatchingChatModel
from handler.engine.chat import start_chat, start_chats
from handler.engine.generation import Generation
from handler.engine.llama_options import ModelOptions
from handler.engine.types import ChatRequest, PromptChoices, QueueLimits, SamplingParams
from handler.errors import Overloaded
from handler.formats.chat_format import ChatInput, ToolUse
from handler.store.prefixes import PrefixStore
from tests.support.demo import end_of_turn_bias, tokenize
from tests.support.devices import GPU_LAYERS, batch_invariant_on_cpu_only

PROMPTS = ["Name three fruits.", "What is the capital of France?", "Write a haiku about rain.",
           "Explain gravity in one sentence.", "List two colours.", "Say hello in Spanish."]


def _options(**overrides):
    return ModelOptions(**{"n_ctx": 1024, "n_batch": 512, "n_threads": 2, "n_gpu_layers": GPU_LAYERS, "n_parallel": 4,
                           **overrides})


@pytest.fixture(scope="module")
def model(demo_model_path):
    loaded = BatchingChatModel("demo", demo_model_path, _options())
    yield loaded
    loaded.close()


def _request(prompt, max_tokens=24, **params):
    return ChatRequest(chat=ChatInput([{"role": "user", "content": prompt}]),
                       params=SamplingParams(max_tokens=max_tokens, temperature=0, **params))


async def _reply(model, request):
    started = await start_chat(model, request)
    text, final = "", None
    async for event in started.events():
        if event.delta is not None:
            text += event.delta.content
        if event.finish_reason is not None:
            final = event
    return text, final.finish_reason, final.usage.completion_tokens


@batch_invariant_on_cpu_only
def test_batched_outputs_equal_solo_outputs(model):
    async def scenario():
        alone = [await _reply(model, _request(prompt)) for prompt in PROMPTS]
        together = await asyncio.gather(*(_reply(model, _request(prompt)) for prompt in PROMPTS))
        return alone, together

    alone, together = asyncio.run(scenario())
    assert together == alone
    assert len({text for text, _, _ in alone}) == len(PROMPTS)


@batch_invariant_on_cpu_only
def test_seeded_sampling_is_reproducible_in_a_batch(model):
    request = ChatRequest(chat=ChatInput([{"role": "user", "content": "Tell me a story."}]),
                          params=SamplingParams(max_tokens=20, temperature=1.0, seed=42))

    async def scenario():
        alone = await _reply(model, request)
        together = await asyncio.gather(_reply(model, request), _reply(model, _request("Count to ten.")))
        return alone, together[0]

    alone, batched = asyncio.run(scenario())
    assert alone == batched


@batch_invariant_on_cpu_only
def test_chains_sampled_side_by_side_give_each_reply_as_alone(model, monkeypatch):
    """Seeded, biased and penalized requests in the same steps: their chains run on two threads at once
    (engine.chains), and each reply is the one it gets alone."""
    requests = [ChatRequest(chat=ChatInput([{"role": "user", "content": prompt}]), params=SamplingParams(
        max_tokens=16, temperature=0.9, seed=seed, **extra)) for prompt, seed, extra in [
        ("Tell me a story.", 1, {}), ("Name a colour.", 2, {"repeat_penalty": 1.3}),
        ("Describe the sea.", 3, {"logit_bias": {tokenize(" the")[0]: -5.0}}), ("Say something kind.", 4, {})]]
    sizes: list[int] = []
    sample = model.chains.sample
    monkeypatch.setattr(model.chains, "sample", lambda context, chains: sizes.append(len(chains)) or
                        sample(context, chains))

    async def scenario():
        alone = [await _reply(model, request) for request in requests]
        together = await asyncio.gather(*(_reply(model, request) for request in requests))
        return alone, together

    alone, together = asyncio.run(scenario())
    assert together == alone
    assert max(sizes) == len(requests) and model.chains._pool is not None  # the steps' chains ran side by side


def test_cancellation_frees_the_slot(demo_model_path):
    single = BatchingChatModel("single", demo_model_path, _options(n_parallel=1))
    try:
        async def scenario():
            long = _request("Tell me a long story.", max_tokens=2000, logit_bias={int(k): v for k, v in
                                                                                end_of_turn_bias().items()})
            started = await start_chat(single, long)
            events = started.events()
            await events.__anext__()
            await events.aclose()  # the client went away
            return await asyncio.wait_for(_reply(single, _request("Say hi.", max_tokens=3)), timeout=30)

        text, reason, tokens = asyncio.run(scenario())
        assert tokens == 3 and reason == "length"
    finally:
        single.close()


def test_grammar_and_free_requests_share_a_batch(model):
    function = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                      "required": ["city"]}}
    tools = [{"type": "function", "function": function}]
    use = ToolUse(tuple(tools), mode="required", forced=("get_weather",), parallel=False)
    constrained = ChatRequest(chat=ChatInput([{"role": "user", "content": "Weather in Paris?"}], tools=use),
                              params=SamplingParams(max_tokens=60, temperature=0))

    async def call(request):
        started = await start_chat(model, request)
        calls, text = [], ""
        async for event in started.events():
            if event.delta is not None and event.delta.tool_call is not None:
                calls.append(event.delta.tool_call)
            elif event.delta is not None:
                text += event.delta.content
        return calls, text

    async def scenario():
        free_alone = await _reply(model, _request(PROMPTS[0]))
        together = await asyncio.gather(call(constrained), _reply(model, _request(PROMPTS[0])))
        return free_alone, together

    free_alone, (constrained_result, free_batched) = asyncio.run(scenario())
    calls, _ = constrained_result
    assert len(calls) == 1 and calls[0].name == "get_weather" and '"city"' in calls[0].arguments
    assert free_batched == free_alone


def test_long_prompts_prefill_in_chunks(demo_model_path):
    """A prompt of several batches is read whole, chunk after chunk. The replies agree from their start,
    not to the last token: llama.cpp is not batch-invariant (a prompt split into other chunks moves its
    log probabilities, README), so a near tie later on may go either way."""
    prompt = "Summarise this: " + " ".join(f"item {n} is blue;" for n in range(120))
    small = BatchingChatModel("small-batch", demo_model_path, _options(n_batch=32))
    try:
        chunked_text, *chunked_end = asyncio.run(_reply(small, _request(prompt, max_tokens=12)))
    finally:
        small.close()
    whole = BatchingChatModel("whole", demo_model_path, _options())
    try:
        assert len(whole.tokenize(prompt)) > 4 * 32
        whole_text, *whole_end = asyncio.run(_reply(whole, _request(prompt, max_tokens=12)))
    finally:
        whole.close()
    assert chunked_end == whole_end == ["length", 12]
    assert chunked_text.split()[:5] == whole_text.split()[:5]


def test_a_follow_up_turn_reuses_the_cached_prefix(model):
    first = [{"role": "user", "content": "Tell me about the moon."}]

    async def scenario():
        reply, _, _ = await _reply(model, ChatRequest(chat=ChatInput(first), params=SamplingParams(max_tokens=16, temperature=0)))
        follow_up = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And the sun?"}]
        prompt = model.tokenize(model.format.render(ChatInput(follow_up)))
        reuse = max(slot.reusable_prefix(prompt) for slot in model.slots)
        await _reply(model, ChatRequest(chat=ChatInput(follow_up), params=SamplingParams(max_tokens=4, temperature=0)))
        return reuse, len(prompt)

    reuse, total = asyncio.run(scenario())
    assert reuse > total // 2


def test_two_conversations_taking_turns_keep_their_prefixes(model):
    """The second conversation shares only the default system prompt with the first: it takes a slot of its
    own instead of overwriting the first one's, so both follow-ups reuse their whole history."""
    first = [{"role": "user", "content": "Tell me about the moon and its phases."}]
    second = [{"role": "user", "content": "Describe a busy harbour at dawn."}]

    async def scenario():
        replies = [await _reply(model, ChatRequest(chat=ChatInput(chat), params=SamplingParams(max_tokens=16, temperature=0)))
                   for chat in (first, second)]
        shares = []
        for chat, (reply, _, _) in zip((first, second), replies, strict=True):
            follow_up = [*chat, {"role": "assistant", "content": reply}, {"role": "user", "content": "Go on."}]
            prompt = model.tokenize(model.format.render(ChatInput(follow_up)))
            asked = model.tokenize(model.format.render(ChatInput(chat)))  # what the first turn read
            shares.append(max(slot.reusable_prefix(prompt) for slot in model.slots) - len(asked))
            await _reply(model, ChatRequest(chat=ChatInput(follow_up), params=SamplingParams(max_tokens=4, temperature=0)))
        return shares

    beyond_first_turn = asyncio.run(scenario())  # tokens reused past the first turn's prompt
    assert all(extra >= 0 for extra in beyond_first_turn), beyond_first_turn


def test_a_formats_marker_tokens_reach_its_parser_as_text(model):
    """Special tokens render as nothing, unless the chat format preserves them (as Mistral's
    `[TOOL_CALLS]`): the demo vocabulary's `<|im_start|>` stands in for such a marker."""
    (marker,) = tokenize("<|im_start|>", special=True)
    assert model.special_tokens(("<|im_start|>", "hello")) == frozenset({marker})
    params = SamplingParams(max_tokens=3, temperature=0, logit_bias={marker: 100})

    async def generated(preserved):
        tokens = model.tokenize(model.format.render(ChatInput([{"role": "user", "content": "Hi"}])))
        generation = await model.start_generation(tokens, params, preserved=preserved)
        return "".join([chunk.text async for chunk in generation.chunks()])

    assert asyncio.run(generated(frozenset())) == ""
    assert asyncio.run(generated(frozenset({marker}))) == "<|im_start|>" * 3


@pytest.mark.parametrize("stop", [(), ("e",), (" the",)])
def test_logprobs_cover_exactly_the_text(model, stop):
    async def generated():
        tokens = model.tokenize(model.format.render(ChatInput([{"role": "user", "content": "Tell me a story."}])))
        params = SamplingParams(max_tokens=24, temperature=0, stop=stop)
        generation = await model.start_generation(tokens, params, logprobs=3)
        return [chunk async for chunk in generation.chunks()]

    chunks = asyncio.run(generated())
    text = "".join(chunk.text for chunk in chunks)
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    assert text and "".join(entry.text for entry in entries) == text
    for chunk in chunks:
        assert "".join(entry.text for entry in chunk.logprobs) == chunk.text
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top) == 3
        assert [choice.logprob for choice in entry.top] == sorted((c.logprob for c in entry.top), reverse=True)
        assert entry.top[0].bytes == entry.bytes and entry.top[0].logprob == entry.logprob  # greedy: the best


def test_n_choices_read_the_prompt_once(demo_model_path):
    """The first choice prefills; the others copy its KV cells and sample from its logits, so at
    temperature 0 every choice equals the solo reply, and only one sequence ever prefilled."""
    steps = []
    model = BatchingChatModel("choices", demo_model_path, _options(), on_step=steps.append)
    try:
        async def scenario():
            alone = await _reply(model, _request(PROMPTS[2]))
            steps.clear()
            started = await start_chats(model, attrs.evolve(_request(PROMPTS[2]), choices=3))
            replies = []
            for chat in started:
                text = ""
                async for event in chat.events():
                    text += event.delta.content if event.delta is not None else ""
                replies.append(text)
            return alone, replies

        (alone_text, _, _), replies = asyncio.run(scenario())
    finally:
        model.close()
    assert replies == [alone_text] * 3
    assert len({seq for step in steps for seq in step.prefilled}) == 1
    assert len({seq for step in steps for seq in step.decoded}) == 3


def test_sequences_decoding_together_sit_in_neighbouring_slots(demo_model_path):
    """With a KV stream per sequence, llama.cpp computes a step once per run of consecutive sequence ids.
    With slots 0–3 used in the order 0, 3, 1, 2 (1 and 2 continued conversations), two new prompts took
    slots 0 and 3, the least recently used (two runs); now 0 and 1 (one)."""
    steps = []
    model = BatchingChatModel("neighbours", demo_model_path, _options(), on_step=steps.append)
    prompts = [[1000 + 20 * number + offset for offset in range(20)] for number in range(6)]

    async def generate(*tokens):
        generations = await model.start_generations(
            [PromptChoices(list(prompt), [SamplingParams(max_tokens=4, temperature=0)]) for prompt in tokens])
        return [[chunk async for chunk in generation.chunks()] for generation in generations]

    async def scenario():
        for prompt in prompts[:4]:  # slots 0, 1, 2, 3
            await generate(prompt)
        for prompt in prompts[1:3]:  # the conversations in slots 1 and 2 go on there
            await generate(prompt + [7, 7])
        steps.clear()
        await generate(*prompts[4:])

    try:
        asyncio.run(scenario())
    finally:
        model.close()
    assert {seq for step in steps for seq in step.decoded} == {0, 1}


def test_requests_arriving_together_never_overfill_the_line(tmp_path, demo_model_path):
    """MAX_QUEUE is checked as a request joins the line, in the same step. Before, a request checked it
    and then looked for a saved prefix off the loop, so a burst passed the check before any joined."""
    store = _CountingStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=8, key=b"k" * 32)
    model = BatchingChatModel("line", demo_model_path, _options(n_parallel=1),
                              QueueLimits(max_waiting=2, timeout_s=600), prefixes=store)
    try:
        async def scenario():
            running = await model.start_generation(model.tokenize("Tell me a long story."), SamplingParams(
                max_tokens=2000, temperature=0, logit_bias={int(k): v for k, v in end_of_turn_bias().items()}))
            burst = model.tokenize(" ".join(["A list of words to read."] * 8))
            results = await asyncio.gather(*(model.start_generation(burst, SamplingParams(max_tokens=1))
                                             for _ in range(8)), return_exceptions=True)
            running.cancel.set()  # the slot frees: the accepted ones run
            for result in results:
                if isinstance(result, Generation):
                    assert [chunk async for chunk in result.chunks()][-1].finish_reason == "length"
            return results

        results = asyncio.run(scenario())
    finally:
        model.close()
    assert [type(result) for result in results].count(Overloaded) == 6, results
    assert all(isinstance(result, Generation | Overloaded) for result in results), results
    assert store.lookups == 2  # only the requests the line took looked for a saved prefix


class _CountingStore(PrefixStore):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookups = 0

    def find_blocking(self, space, prompt, worth=None):
        self.lookups += 1
        return super().find_blocking(space, prompt, worth)


@batch_invariant_on_cpu_only
def test_plain_greedy_picks_what_the_sampler_chain_picks(model):
    """A plain greedy request skips llama.cpp's sampler chain (the engine takes the largest logit itself);
    a zero logit_bias changes no logit but keeps the chain: both replies and their logprobs agree."""
    async def generated(params):
        tokens = model.tokenize(model.format.render(ChatInput([{"role": "user", "content": "Tell me a story."}])))
        generation = await model.start_generation(tokens, params, logprobs=2)
        return [chunk async for chunk in generation.chunks()]

    async def scenario():
        fast = await asyncio.gather(*(generated(SamplingParams(max_tokens=32, temperature=0)) for _ in range(3)))
        chain = await generated(SamplingParams(max_tokens=32, temperature=0, logit_bias={5: 0.0}))
        return fast, chain

    fast, chain = asyncio.run(scenario())
    assert all(run == chain for run in fast) and "".join(chunk.text for chunk in chain)


def test_a_step_delivers_its_tokens_in_one_wake_up_per_loop(model):
    """Every token of every sequence in a step reaches the event loop through one call, in order."""
    from handler.engine import generation as delivery

    calls = []
    original = delivery._run

    def counting(batch):
        calls.append(len(batch))
        original(batch)

    async def scenario():
        tokens = [model.tokenize(prompt) for prompt in PROMPTS[:4]]
        generations = await model.start_generations(
            [PromptChoices(prompt, [SamplingParams(max_tokens=8, temperature=0)]) for prompt in tokens])
        return [[chunk async for chunk in generation.chunks()] for generation in generations]

    delivery._run = counting
    try:
        replies = asyncio.run(scenario())
    finally:
        delivery._run = original
    assert all(reply[-1].finish_reason is not None for reply in replies)
    assert max(calls) > 1  # several sequences' chunks in one delivery


def test_a_repacked_model_decodes_without_a_kept_thread_pool(model, demo_model_path):
    """This llama.cpp's repacked CPU matmuls ran at half speed with a kept pool attached (engine.threads):
    a model with `repack` gets ggml's threads per decode, and still answers; the others keep their pool."""
    repacked = BatchingChatModel("repacked", demo_model_path, _options(repack=True, n_parallel=1))
    try:
        assert not repacked.threads.kept and model.threads.kept
        text, reason, _ = asyncio.run(_reply(repacked, _request(PROMPTS[0], max_tokens=4)))
        assert reason == "length" and text
    finally:
        repacked.close()
        repacked.join(60)  # its context is freed on the scheduler thread, not at interpreter exit
