"""Copying a sequence's KV state to host memory without stalling the other sequences.

A prompt's state is saved once it has been read (engine.batching `_save_prefix`): hundreds of MB for a
large model (an 8B model's 3k-token prompt: ~440 MB, ~60 ms over a GPU's pageable copy, plus the host
memory it fills), which on the scheduler thread held every stream for that long. Here the copy runs on
a thread of its own while the scheduler goes on decoding the other sequences; the copied sequence
itself decodes nothing until its copy has ended, and nothing drops or overwrites its cells before then
(the engine waits for the copy first). So does a conversation's state copied to the memory tier when a
new prompt takes its slot: that prompt is read once the copy has ended and the old cells are gone.

Why this is safe with this llama.cpp: every sequence has a KV stream of its own (`kv_unified = false`),
`llama_state_seq_get_data` reads only its sequence's stream (cells and tensors; of the other streams,
only whether a cell is empty or holds that sequence, which it never does), and a decode writes only the
streams of the sequences in its batch. Where the KV cache is in host memory the read is a memcpy; on
CUDA a device-to-host copy on the copying thread's own stream, of cells no kernel writes. Other GPU
backends (Vulkan submits to one queue, which two threads may not do at once) copy on the scheduler
thread, as before."""

from __future__ import annotations

import ctypes
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

import llama_cpp

from handler.engine import devices
from handler.engine.llama_options import ModelOptions
from handler.store.prefix_ram import State

# The GPU backends whose KV buffers a thread may read while another thread decodes.
CONCURRENT_BACKENDS = frozenset({"CUDA"})

T = TypeVar("T")


def concurrent(options: ModelOptions) -> bool:
    """Whether a model's state copies may run beside its decoding: its KV cache is in host memory (no
    layer on a GPU, or no GPU), or on GPUs of `CONCURRENT_BACKENDS` only."""
    return options.n_gpu_layers == 0 or not devices.has_gpu() or devices.gpu_backends() <= CONCURRENT_BACKENDS


def copy_state(ctx: Any, seq_id: int, max_bytes: int) -> State | None:
    """A copy of the sequence's state, unless it is larger than `max_bytes`: llama.cpp writes it
    straight into the bytearray that is kept (one copy)."""
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    if size > max_bytes:
        return None
    state = bytearray(size)
    view = (ctypes.c_uint8 * size).from_buffer(state)
    written = llama_cpp.llama_state_seq_get_data(ctx, view, size, seq_id)
    del view  # the bytearray can be trimmed once nothing else looks at its memory
    del state[written:]
    return state


class StateCopies(Generic[T]):
    """Copies under way, at most one per sequence, each with what its state is for (`T`); used by the
    scheduler thread only. Not `concurrent`: each copy is made at once, on that thread."""

    def __init__(self, ctx: Any, *, concurrent: bool = True) -> None:
        self._ctx, self._concurrent = ctx, concurrent
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[int, tuple[Future[State | None], T]] = {}

    def start(self, seq_id: int, max_bytes: int, purpose: T) -> None:
        assert seq_id not in self._running  # the engine waits for a sequence's copy before touching it
        self._running[seq_id] = (self._copy(seq_id, max_bytes), purpose)

    def _copy(self, seq_id: int, max_bytes: int) -> Future[State | None]:
        if not self._concurrent:
            made: Future[State | None] = Future()
            try:
                made.set_result(copy_state(self._ctx, seq_id, max_bytes))
            except Exception as exc:  # noqa: BLE001 - handed over like a failed concurrent copy
                made.set_exception(exc)
            return made
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="state-copy")
        return self._pool.submit(copy_state, self._ctx, seq_id, max_bytes)

    def copying(self, seq_id: int) -> bool:
        return seq_id in self._running

    def take_finished(self) -> list[tuple[State | None, T]]:
        """The copies that have ended (a failed one as None), each taken once."""
        done = [seq_id for seq_id, (future, _) in self._running.items() if future.done()]
        ended = [self._running.pop(seq_id) for seq_id in done]
        return [(_result(future), purpose) for future, purpose in ended]

    def wait(self, seq_id: int | None = None) -> None:
        """Until the sequence's copy (or, with None, any copy) has ended."""
        futures = [future for key, (future, _) in self._running.items() if seq_id in (None, key)]
        if futures:
            wait(futures, return_when="FIRST_COMPLETED")

    def close(self) -> None:
        """Wait for every copy to end (before the context goes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _result(future: Future[State | None]) -> State | None:
    try:
        return future.result()
    except Exception:  # noqa: BLE001 - a copy that failed saves nothing; the sequence goes on
        return None
