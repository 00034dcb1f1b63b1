"""A reply read whole reaches the loop once, at its end: its text joined in order, the prompt's log
probabilities still first, an error after whatever came before it; a streamed reply comes a step at
a time. The model's thread is played here by a thread of its own."""

from __future__ import annotations

import asyncio
import threading

import pytest

from handler.engine.generation import Generation, delivered_together, joined
from handler.engine.types import PromptLogprobs, TextChunk, TokenLogprob


def _entry(text: str) -> TokenLogprob:
    return TokenLogprob(text=text, bytes=text.encode(), logprob=-1.0)


def _on_model_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)


async def _read(generation: Generation) -> list[TextChunk]:
    return [chunk async for chunk in generation.chunks()]


def _emit_steps(generation: Generation, steps: list[list[TextChunk]]) -> None:
    for step in steps:
        with delivered_together():
            for chunk in step:
                generation.emit(chunk)


def _wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Counts the loop's cross-thread wake-ups from now on."""
    count = [0]
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    return count


STEPS = [[TextChunk(text="Hel", logprobs=(_entry("Hel"),))], [TextChunk(text="lo", logprobs=(_entry("lo"),))],
         [TextChunk(text=" you"), TextChunk(finish_reason="stop", prompt_tokens=3, completion_tokens=3)]]


def test_a_whole_reply_wakes_the_loop_once_with_its_text_joined():
    async def run():
        generation = Generation()
        generation.read_whole()
        wakeups = _wakeups(asyncio.get_running_loop())
        _on_model_thread(lambda: _emit_steps(generation, STEPS))
        return await _read(generation), wakeups[0]

    chunks, wakeups = asyncio.run(run())
    assert wakeups == 1
    assert [chunk.text for chunk in chunks] == ["Hello you", ""]
    assert [entry.text for entry in chunks[0].logprobs] == ["Hel", "lo"]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 3


def test_a_streamed_reply_comes_a_step_at_a_time():
    async def run():
        generation = Generation()
        wakeups = _wakeups(asyncio.get_running_loop())
        _on_model_thread(lambda: _emit_steps(generation, STEPS))
        return await _read(generation), wakeups[0]

    chunks, wakeups = asyncio.run(run())
    assert wakeups == len(STEPS)
    assert [chunk.text for chunk in chunks] == ["Hel", "lo", " you", ""]


def test_text_sent_before_the_reader_asked_for_the_whole_comes_first():
    async def run():
        generation = Generation()
        _on_model_thread(lambda: _emit_steps(generation, STEPS[:1]))
        generation.read_whole()
        _on_model_thread(lambda: _emit_steps(generation, STEPS[1:]))
        return await _read(generation)

    assert [chunk.text for chunk in asyncio.run(run())] == ["Hel", "lo you", ""]


def test_an_error_comes_after_the_text_held_before_it():
    async def run():
        generation = Generation()
        generation.read_whole()
        _on_model_thread(lambda: _emit_steps(generation, [STEPS[0], [RuntimeError("decode failed")]]))
        seen = []
        with pytest.raises(RuntimeError, match="decode failed"):
            async for chunk in generation.chunks():
                seen.append(chunk.text)
        return seen

    assert asyncio.run(run()) == ["Hel"]


def test_the_prompts_log_probabilities_stay_a_chunk_of_their_own():
    prompt = TextChunk(prompt_logprobs=PromptLogprobs("A", ()))
    chunks = joined([prompt, TextChunk(text="b"), TextChunk(text="c")])
    assert chunks == [prompt, TextChunk(text="bc")]
