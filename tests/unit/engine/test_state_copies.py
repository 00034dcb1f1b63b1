"""Prompt states are copied beside decoding where the KV cache is in host memory or on CUDA, and on the
scheduler thread elsewhere; a copy is handed over once, a failed one as nothing."""

from __future__ import annotations

import threading

import pytest

from handler.engine import devices, state_copies
from handler.engine.llama_options import ModelOptions
from handler.engine.state_copies import StateCopies


def _options(layers: int) -> ModelOptions:
    return ModelOptions(n_ctx=512, n_batch=512, n_threads=2, n_gpu_layers=layers, n_parallel=4)


@pytest.mark.parametrize(("gpu", "backends", "layers", "expected"), [
    (False, set(), devices.ALL_LAYERS, True),  # no GPU: the KV cache is in host memory
    (True, {"Vulkan"}, 0, True),  # no layer offloaded: nor is the KV cache
    (True, {"CUDA"}, devices.ALL_LAYERS, True),
    (True, {"Vulkan"}, devices.ALL_LAYERS, False),
    (True, {"CUDA", "Vulkan"}, 12, False)])
def test_copies_run_beside_decoding_only_where_that_is_safe(monkeypatch, gpu, backends, layers, expected):
    monkeypatch.setattr(devices, "has_gpu", lambda: gpu)
    monkeypatch.setattr(devices, "gpu_backends", lambda: frozenset(backends))
    assert state_copies.concurrent(_options(layers)) is expected


@pytest.fixture
def copies_made(monkeypatch):
    """copy_state replaced: sequence 13 fails, every other copy is a few bytes naming its thread."""
    def fake_copy(ctx, seq_id, max_bytes):
        if seq_id == 13:
            raise RuntimeError("llama.cpp could not write the state")
        return bytearray(threading.current_thread().name.encode())

    monkeypatch.setattr(state_copies, "copy_state", fake_copy)


@pytest.mark.parametrize("concurrent", [True, False])
def test_each_copy_is_handed_over_once_and_a_failed_one_as_nothing(copies_made, concurrent):
    copies: StateCopies[str] = StateCopies(ctx=None, concurrent=concurrent)
    copies.start(3, 1 << 20, "prompt three")
    copies.start(13, 1 << 20, "prompt thirteen")
    assert copies.copying(3) and copies.copying(13)
    for seq_id in (3, 13):
        copies.wait(seq_id)
    finished = dict((purpose, state) for state, purpose in copies.take_finished())
    assert finished["prompt thirteen"] is None
    thread = bytes(finished["prompt three"]).decode()
    assert thread.startswith("state-copy") if concurrent else thread == threading.current_thread().name
    assert not copies.copying(3) and copies.take_finished() == []
    copies.close()
