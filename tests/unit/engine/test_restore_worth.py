"""Whether a model restores a saved prefix: by its measured rates, restoring must beat reading."""

from __future__ import annotations

import types

from handler.engine.batching import BatchingChatModel
from handler.store.prefix_ram import Rate


def _model(prefill_per_s=None, restore_per_s=None):
    return types.SimpleNamespace(prefill_rate=Rate(per_second=prefill_per_s), restore_rate=Rate(per_second=restore_per_s))


def test_before_anything_is_measured_restoring_is_tried():
    assert BatchingChatModel._worth(_model(), 1000, 10 << 20, 0.0)  # type: ignore[arg-type]


def test_a_fast_prefill_beats_a_large_state_on_a_gpu():
    """H200-like: 10,000 prompt tokens a second, 7.4 GB/s pageable copies, a 440 MB state for 3k tokens."""
    gpu = _model(prefill_per_s=10_000, restore_per_s=7.4e9)
    assert not BatchingChatModel._worth(gpu, 3000, 440_000_000, fetch_seconds=0.5)  # from the volume
    assert BatchingChatModel._worth(gpu, 3000, 440_000_000, fetch_seconds=0.0)  # already in memory


def test_on_a_cpu_restoring_pays():
    cpu = _model(prefill_per_s=400, restore_per_s=2e9)
    assert BatchingChatModel._worth(cpu, 1400, 31_000_000, fetch_seconds=0.05)  # type: ignore[arg-type]
