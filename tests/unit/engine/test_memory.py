"""A model's estimated footprint split as llama.cpp places it: offloaded layers' weights and KV cache,
and the activations, on the GPU; the rest, and the logits the host reads, on the host; everything on
the host without a GPU."""

from __future__ import annotations

import pytest

from handler.engine import memory
from handler.engine.llama_options import ModelOptions


def test_device_shares_follow_the_offloaded_layers():
    assert memory.device_shares(0, 28) == (0.0, 0.0)
    assert memory.device_shares(-1, 28) == (1.0, 1.0)  # all layers and the output layer
    assert memory.device_shares(29, 28) == (1.0, 1.0)
    assert memory.device_shares(28, 28) == (28 / 29, 1.0)  # the output layer stays on the host
    assert memory.device_shares(7, 28) == (7 / 29, 7 / 28)


def _options(gpu_layers: int) -> ModelOptions:
    return ModelOptions(n_ctx=512, n_batch=512, n_threads=2, n_gpu_layers=gpu_layers, verbose=False, n_parallel=2)


@pytest.mark.parametrize("has_gpu", [False, True])
def test_the_estimate_splits_between_host_and_gpu(monkeypatch, demo_model_path, has_gpu):
    monkeypatch.setattr(memory.devices, "has_gpu", lambda: has_gpu)
    on_host = memory.estimate_bytes(demo_model_path, _options(0), "chat")
    offloaded = memory.estimate_bytes(demo_model_path, _options(-1), "chat")
    assert on_host.device == 0 and on_host.total == offloaded.total
    if has_gpu:
        assert offloaded.device > offloaded.host > 0  # the logits stay on the host
    else:
        assert offloaded.device == 0  # no GPU: -1 places nothing anywhere else
