"""A generation running on a model's thread, read by the event loop as an async stream."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

from handler.engine.types import TextChunk

_Call = tuple["Generation", Callable[..., Any], tuple[Any, ...]]
_outbox = threading.local()  # per model thread: what its generations emit during one step


@contextlib.contextmanager
def delivered_together() -> Iterator[None]:
    """What generations emit on this thread inside the block reaches each event loop in one wake-up at
    its end, in order, instead of one cross-thread wake-up per token of every sequence."""
    calls: list[_Call] = []
    _outbox.calls = calls
    try:
        yield
    finally:
        _outbox.calls = None
        by_loop: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
        for call in calls:
            by_loop.setdefault(call[0]._loop, []).append(call)
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_run, batch)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                for generation, _, _ in batch:
                    generation.cancel.set()


def _run(batch: list[_Call]) -> None:
    for _, function, args in batch:
        function(*args)


class Generation:
    """Chunks cross from the model's thread to the loop through an asyncio queue. Stopping early
    (or dropping the object) sets `cancel`, which the model checks before its next decode step.

    A reader that takes the reply whole (`read_whole`: a JSON answer, not a stream) gets its text at
    the end, in one chunk: waking the loop for every step would only take a core from the decode."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.started = asyncio.Event()  # set when the request gets its turn (a slot)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[TextChunk | BaseException] = asyncio.Queue()
        self.prompt_tokens = 0  # its prompt's length
        self.restored_tokens = 0  # prompt tokens whose KV state was restored (set before `started`)
        self.restored_from = ""  # from where: "ram", "volume" or "s3"
        self.cached_tokens = 0  # prompt tokens not read again: kept in the slot or restored (set before `started`)
        self.refused: BaseException | None = None  # why it will never get a slot (set with `started`)
        self.first_token_at: float | None = None  # perf_counter when its first token was sampled
        self._whole = False
        self._held: list[TextChunk] = []  # text kept on the model's thread for a whole reader

    def read_whole(self) -> None:
        """From now on, hold text until the reply ends (called on the loop, at any time)."""
        self._whole = True

    def emit(self, item: TextChunk | BaseException) -> None:
        """Called on the model's thread."""
        if self._whole and isinstance(item, TextChunk) and item.finish_reason is None:
            self._held.append(item)
        elif self._held:
            held, self._held = self._held, []
            self._call(self._put_whole, held, item)
        else:
            self._call(self._queue.put_nowait, item)

    def _put_whole(self, held: list[TextChunk], last: TextChunk | BaseException) -> None:
        for chunk in joined(held):
            self._queue.put_nowait(chunk)
        self._queue.put_nowait(last)

    def mark_started(self) -> None:
        """Called on the model's thread."""
        self._call(self.started.set)

    def refuse(self, error: BaseException) -> None:
        """It will never get a slot (its model closed): whoever waits for its turn, or reads it, gets
        `error` at once. Called on the model's thread."""
        self._call(self._refused, error)

    def _refused(self, error: BaseException) -> None:
        self.refused = error
        self._queue.put_nowait(error)
        self.started.set()

    def _call(self, function: Callable[..., Any], *args: Any) -> None:
        calls: list[_Call] | None = getattr(_outbox, "calls", None)
        if calls is not None:  # within a step: delivered with everything else the step emits
            calls.append((self, function, args))
            return
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancel.set()

    async def chunks(self) -> AsyncGenerator[TextChunk, None]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel.set()

    def __del__(self) -> None:
        self.cancel.set()


def joined(chunks: list[TextChunk]) -> list[TextChunk]:
    """Consecutive text chunks as one (their text and log probabilities in order); a chunk carrying the
    prompt's log probabilities stays a chunk of its own, where it was."""
    out: list[TextChunk] = []
    texts: list[TextChunk] = []
    for chunk in [*chunks, None]:
        if chunk is not None and chunk.prompt_logprobs is None:
            texts.append(chunk)
            continue
        if texts:
            out.append(TextChunk(text="".join(each.text for each in texts),
                                 logprobs=tuple(entry for each in texts for entry in each.logprobs)))
            texts = []
        if chunk is not None:
            out.append(chunk)
    return out
