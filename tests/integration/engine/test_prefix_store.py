"""Prompt prefixes' KV state saved on the volume and restored by a new model instance (a new process,
as far as the KV cache knows): the prompt is not read again, the reply is the same, and a damaged file
is removed, never loaded."""

from __future__ import annotations

import asyncio
import threading
import time

import llama_cpp
import pytest

from handler.engine import state_copies
from handler.engine.batching import BatchingChatModel
from handler.engine.llama_options import ModelOptions
from handler.engine.types import SamplingParams
from handler.store.prefix_ram import common_length
from handler.store.prefixes import SUFFIX, PrefixSpace, PrefixStore, _Codec
from tests.support.demo import end_of_turn_bias
from tests.support.devices import GPU_LAYERS

SYSTEM = "You answer questions about this inventory. " + " ".join(
    f"Shelf {n} holds {n * 3} red boxes and {n + 7} blue jars." for n in range(40))
MIN_TOKENS = 64
KEY = b"test-key-" * 4


def _model(path, store=None, steps=None):
    options = ModelOptions(n_ctx=2048, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=2)
    return BatchingChatModel("demo", path, options, prefixes=store, identity="demo-file",
                             on_step=None if steps is None else steps.append)


async def _reply(model, text, max_tokens=12):
    generation = await model.start_generation(model.tokenize(text), SamplingParams(max_tokens=max_tokens,
                                                                                    temperature=0))
    return "".join([chunk.text async for chunk in generation.chunks()]), generation.restored_tokens


def _ask(question):
    return f"{SYSTEM}\nQuestion: {question}\nAnswer:"


@pytest.fixture
def saved(tmp_path, demo_model_path):
    """A store holding the prefix of one long prompt, written by a first model instance."""
    store = PrefixStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=MIN_TOKENS, key=KEY)
    first = _model(demo_model_path, store)
    try:
        asyncio.run(_reply(first, _ask("What is on shelf 3?")))
        store.flush()
    finally:
        first.close()
    files = list((tmp_path / "kv").rglob("*"))
    saved_files = [path for path in files if path.suffix == SUFFIX]
    assert len(saved_files) == 1, files
    return tmp_path / "kv", saved_files[0]


def _fresh_reply(demo_model_path, text):
    model = _model(demo_model_path)
    try:
        return asyncio.run(_reply(model, text))[0]
    finally:
        model.close()


def test_a_new_instance_restores_the_prefix_and_replies_the_same(saved, demo_model_path):
    directory, _ = saved
    steps = []
    model = _model(demo_model_path, PrefixStore(directory, 1 << 30, MIN_TOKENS, key=KEY), steps)
    question = _ask("What is on shelf 5?")
    try:
        reply, restored = asyncio.run(_reply(model, question))
        total = len(model.tokenize(question))
    finally:
        model.close()
        model.join(30)  # the last step is recorded after its tokens went out
    prefilled = sum(count for step in steps for count in step.prefilled.values())
    assert restored > total - 20 and prefilled == total - restored  # only the new question was read
    assert reply == _fresh_reply(demo_model_path, question)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_file_is_removed_not_loaded(saved, demo_model_path, damage):
    directory, file = saved
    data = bytearray(file.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a prefix file at all")
    file.write_bytes(bytes(data))
    question = _ask("What is on shelf 5?")
    model = _model(demo_model_path, PrefixStore(directory, 1 << 30, MIN_TOKENS, key=KEY))
    try:
        reply, restored = asyncio.run(_reply(model, question))
    finally:
        model.close()
    assert restored == 0 and not file.exists()
    assert reply == _fresh_reply(demo_model_path, question)


def test_another_model_configuration_does_not_see_it(saved, demo_model_path):
    directory, _ = saved
    options = ModelOptions(n_ctx=1024, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=2)
    model = BatchingChatModel("demo", demo_model_path, options, identity="demo-file",
                              prefixes=PrefixStore(directory, 1 << 30, MIN_TOKENS, key=KEY))
    try:
        assert asyncio.run(_reply(model, _ask("What is on shelf 5?")))[1] == 0
    finally:
        model.close()


def test_the_budget_keeps_the_most_recent(tmp_path, demo_model_path):
    store = PrefixStore(tmp_path / "kv", budget_bytes=1, min_tokens=MIN_TOKENS, key=KEY)
    model = _model(demo_model_path, store)
    try:
        asyncio.run(_reply(model, _ask("What is on shelf 3?"), max_tokens=1))
        store.flush()
    finally:
        model.close()
    assert not list((tmp_path / "kv").glob(f"*/*{SUFFIX}"))  # over budget: evicted at once


def test_a_state_holding_fewer_positions_than_its_tokens_say_is_dropped(saved, demo_model_path):
    """A signed file whose header claims more tokens than its state holds (a bug or a leaked key): the
    restored sequence is checked to hold every position, and the file goes instead of the reply
    decoding over missing cells."""
    directory, file = saved
    question = _ask("What is on shelf 5?")
    codec, space = _Codec(KEY), PrefixSpace(file.parent.name, max_tokens=2048, max_state_bytes=1 << 30)
    tokens, state = codec.read(file, space, with_state=True)
    model = _model(demo_model_path, PrefixStore(directory, 1 << 30, MIN_TOKENS, key=KEY))
    try:
        claimed = [*tokens, *model.tokenize(" More shelves.", add_bos=False)]  # beyond the state's cells
        file.write_bytes(codec.encode(space.name, claimed, state))
        reply, restored = asyncio.run(_reply(model, question))
    finally:
        model.close()
    assert restored == 0 and not file.exists()
    assert reply == _fresh_reply(demo_model_path, question)


def test_a_conversation_that_lost_its_slot_comes_back_from_memory(tmp_path, demo_model_path):
    """One slot, two conversations taking turns: each turn evicts the other's cells, which go to the
    memory tier first; the next turn restores its whole conversation from there (more than the saved
    first prompt), and replies as a fresh model does."""
    store = PrefixStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=MIN_TOKENS, key=KEY, ram_bytes=1 << 30)
    options = ModelOptions(n_ctx=2048, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=1)
    model = BatchingChatModel("demo", demo_model_path, options, prefixes=store, identity="demo-file")
    first = model.tokenize(_ask("What is on shelf 3?"))
    other = "A different inventory. " + " ".join(f"Bin {n} has {n + 2} green cups." for n in range(60))
    greedy = SamplingParams(max_tokens=8, temperature=0, logit_bias={model.model.token_eos(): -100.0})

    async def run():
        generation = await model.start_generation(first, greedy)
        _ = [chunk async for chunk in generation.chunks()]
        conversation = list(model.slots[0].cached)  # the prompt and the reply's tokens, as the slot holds them
        await _reply(model, other, max_tokens=2)  # takes the slot: the first conversation goes to memory
        follow_up = conversation + model.tokenize("\nQuestion: And on shelf 4?\nAnswer:", add_bos=False)
        again = await model.start_generation(follow_up, greedy)
        text = "".join([chunk.text async for chunk in again.chunks()])
        return follow_up, text, again, len(conversation)

    try:
        follow_up, text, generation, held = asyncio.run(run())
    finally:
        model.close()
    assert generation.restored_from == "ram" and generation.restored_tokens == held > len(first)
    fresh = _model(demo_model_path)

    async def alone():
        return "".join([chunk.text async for chunk in (await fresh.start_generation(follow_up, greedy)).chunks()])

    try:
        assert text == asyncio.run(alone())
    finally:
        fresh.close()


class _HeldCopy:
    """`state_copies.copy_state`, once held, waits until released: the steps made meanwhile show what
    decoded beside the copy."""

    def __init__(self, monkeypatch) -> None:
        self.started, self.released = threading.Event(), threading.Event()
        self._monkeypatch, self._copy = monkeypatch, state_copies.copy_state

    def hold(self) -> None:
        self._monkeypatch.setattr(state_copies, "copy_state", self._held)

    def _held(self, *args):
        self.started.set()
        self.released.wait(300)
        return self._copy(*args)

    async def steps_while_held(self, steps, count=5):
        """The steps recorded once a held copy started, until `count` more were (bounded in time)."""
        assert await asyncio.to_thread(self.started.wait, 120)
        during = len(steps)
        deadline = time.monotonic() + 300
        while len(steps) < during + count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return steps[during:]


def test_a_prompt_state_is_copied_while_the_other_streams_decode(tmp_path, demo_model_path, monkeypatch):
    """Saving a read prompt's KV state runs beside the other sequences' decoding: while the copy is held,
    a running stream keeps getting tokens and the saved prompt's own reply waits; once the copy ends, the
    state is in the store before that reply ends."""
    copy = _HeldCopy(monkeypatch)
    copy.hold()
    store = PrefixStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=MIN_TOKENS, key=KEY)
    steps = []
    model = _model(demo_model_path, store, steps)
    bias = {int(token): value for token, value in end_of_turn_bias().items()}
    prompt = model.tokenize(_ask("What is on shelf 3?"))

    async def scenario():
        running = await model.start_generation(model.tokenize("Count slowly to one hundred."),
                                               SamplingParams(max_tokens=400, temperature=0, logit_bias=bias))
        reading = asyncio.ensure_future(_drain(running))
        saved = await model.start_generation(prompt, SamplingParams(max_tokens=4, temperature=0, logit_bias=bias))
        held_steps = await copy.steps_while_held(steps)
        in_store = store.covers(model.prefix_space, prompt)
        copy.released.set()
        await _drain(saved)
        assert store.covers(model.prefix_space, prompt)  # given to the store before its reply ended
        running.cancel.set()
        await reading
        return held_steps, in_store

    try:
        held_steps, in_store = asyncio.run(scenario())
    finally:
        copy.released.set()
        model.close()
        model.join(30)
    assert len(held_steps) >= 5 and not in_store
    running_seq = held_steps[0].decoded[0]
    assert all(step.decoded == (running_seq,) for step in held_steps)  # only the running stream advanced


async def _drain(generation):
    async for _ in generation.chunks():
        pass


def test_the_scheduler_sleeps_while_a_saved_prefix_is_looked_up(saved, demo_model_path, monkeypatch):
    """A request whose saved prefix is being looked up holds its place in the line; with nothing else to do
    the scheduler waits to be told it ended (it used to spin: ~17,000 passes over the line in one
    ~100 ms look-up here), then restores it."""
    directory, _ = saved
    store = PrefixStore(directory, 1 << 30, MIN_TOKENS, key=KEY)
    model = _model(demo_model_path, store)
    looking, release, asleep = threading.Event(), threading.Event(), threading.Event()
    find, wait = store.find, model._wake.wait
    admitted = []

    async def held_find(*args):
        looking.set()
        await asyncio.to_thread(release.wait, 300)
        return await find(*args)

    def observed_wait(timeout=None):
        if looking.is_set():
            asleep.set()
        return wait(timeout)

    def counted_admit(admit=model._admit):
        admitted.append(looking.is_set() and not release.is_set())
        admit()

    monkeypatch.setattr(store, "find", held_find)
    monkeypatch.setattr(model._wake, "wait", observed_wait)
    monkeypatch.setattr(model, "_admit", counted_admit)

    async def scenario():
        reply = asyncio.ensure_future(_reply(model, _ask("What is on shelf 5?")))
        assert await asyncio.to_thread(looking.wait, 300)
        slept = await asyncio.to_thread(asleep.wait, 60)
        release.set()
        return slept, await reply

    try:
        slept, (_, restored) = asyncio.run(scenario())
    finally:
        release.set()
        model.close()
        model.join(30)
    assert slept and sum(admitted) <= 3 and restored > 0


# A newcomer sharing nothing with the conversation whose slot it takes, and one sharing the start of its
# system prompt (those cells stay in the slot; the rest of the conversation goes): its text, and the
# fewest tokens it shares.
NEWCOMERS = {"shares nothing": ("Name three colours.", 0),
             "shares the system prompt's start": (SYSTEM[:SYSTEM.index(" Shelf 6 ")] + " Name three colours.", 32)}


@pytest.mark.parametrize(("newcomer_text", "least_shared"), NEWCOMERS.values(), ids=NEWCOMERS.keys())
def test_a_conversation_leaving_its_slot_is_copied_while_the_other_streams_decode(tmp_path, demo_model_path,
                                                                                  monkeypatch, newcomer_text,
                                                                                  least_shared):
    """A new prompt takes the slot of a finished conversation: that conversation's state goes to the memory
    tier on the copying thread while a running stream keeps decoding; the new prompt is read only after
    the copy, into a slot that holds no more of the old cells than it shares (its reply is what a fresh
    model gives)."""
    store = PrefixStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=MIN_TOKENS, key=KEY, ram_bytes=1 << 30)
    steps = []
    model = _model(demo_model_path, store, steps)
    bias = {int(token): value for token, value in end_of_turn_bias().items()}
    conversation = model.tokenize(_ask("What is on shelf 3?"))
    copy = _HeldCopy(monkeypatch)

    async def scenario():
        # Its reply goes on past the saved prompt: the slot holds more than any saved state covers.
        await _drain(await model.start_generation(conversation, SamplingParams(max_tokens=4, temperature=0,
                                                                               logit_bias=bias)))
        running = await model.start_generation(model.tokenize("Count slowly to one hundred."),
                                               SamplingParams(max_tokens=400, temperature=0, logit_bias=bias))
        reading = asyncio.ensure_future(_drain(running))
        while not any(step.decoded for step in steps[-1:]):
            await asyncio.sleep(0.01)
        (held_conversation,) = [list(slot.cached) for slot in model.slots if len(slot.cached) > len(conversation)]
        copy.hold()
        newcomer = await model.start_generation(model.tokenize(newcomer_text),
                                                SamplingParams(max_tokens=8, temperature=0))
        held_steps = await copy.steps_while_held(steps)
        copy.released.set()
        reply = "".join([chunk.text async for chunk in newcomer.chunks()])
        running.cancel.set()
        await reading
        shared = common_length(held_conversation, model.tokenize(newcomer_text))
        return held_steps, reply, held_conversation, (newcomer.cached_tokens, shared)

    try:
        held_steps, reply, held_conversation, (kept_cells, shared) = asyncio.run(scenario())
        kept = store.ram.holds(model.prefix_space.name, held_conversation)
    finally:
        copy.released.set()
        model.close()
        model.join(30)
    assert len(held_steps) >= 5 and kept
    assert kept_cells == shared >= least_shared  # the shared cells stayed; the rest went before it was read
    running_seq = held_steps[0].decoded[0]
    assert all(step.decoded == (running_seq,) and not step.prefilled for step in held_steps)
    fresh = _model(demo_model_path)
    try:
        alone = asyncio.run(_reply(fresh, newcomer_text, max_tokens=8))[0]
    finally:
        fresh.close()
    assert reply == alone


def test_a_model_that_cannot_drop_part_of_a_sequence_reads_the_newcomer_whole(tmp_path, demo_model_path,
                                                                               monkeypatch):
    """As for a recurrent or hybrid model, llama.cpp refuses to drop part of a sequence (from the newcomer's
    arrival on): the conversation leaving the slot is still kept in memory, and the newcomer sharing its
    start is read whole, not from cells that are gone (its reply is what a fresh model gives)."""
    remove, refusing = llama_cpp.llama_memory_seq_rm, threading.Event()
    monkeypatch.setattr(llama_cpp, "llama_memory_seq_rm", lambda memory, seq, start, end: not (
        refusing.is_set() and start > 0) and remove(memory, seq, start, end))
    store = PrefixStore(tmp_path / "kv", budget_bytes=1 << 30, min_tokens=MIN_TOKENS, key=KEY, ram_bytes=1 << 30)
    options = ModelOptions(n_ctx=2048, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=1)
    model = BatchingChatModel("demo", demo_model_path, options, prefixes=store, identity="demo-file")
    newcomer_text, _ = NEWCOMERS["shares the system prompt's start"]

    async def scenario():
        # Its reply goes on past the saved prompt: the slot holds more than any saved state covers.
        await _drain(await model.start_generation(model.tokenize(_ask("What is on shelf 3?")), SamplingParams(
            max_tokens=4, temperature=0, logit_bias={int(token): value for token, value in end_of_turn_bias().items()})))
        conversation = list(model.slots[0].cached)
        refusing.set()
        newcomer = await model.start_generation(model.tokenize(newcomer_text),
                                                SamplingParams(max_tokens=12, temperature=0))
        reply = "".join([chunk.text async for chunk in newcomer.chunks()])
        return conversation, newcomer.cached_tokens, reply

    try:
        conversation, kept_cells, reply = asyncio.run(scenario())
        kept = store.ram.holds(model.prefix_space.name, conversation)
    finally:
        model.close()
        model.join(30)
    assert kept and kept_cells == 0
    assert reply == _fresh_reply(demo_model_path, newcomer_text)
