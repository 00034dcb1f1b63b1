"""Greedy sampling moves to the device by default only when every layer is on a CUDA GPU; the
manifest's `device_sampling` decides otherwise."""

from __future__ import annotations

import pytest

from handler.engine import device_sampling, devices
from handler.engine.llama_options import ModelOptions


def _options(**overrides) -> ModelOptions:
    return ModelOptions(**{"n_ctx": 512, "n_batch": 512, "n_threads": 2, "n_gpu_layers": devices.ALL_LAYERS,
                           "n_parallel": 4, **overrides})


@pytest.mark.parametrize(("gpu", "layers", "expected"), [
    (True, devices.ALL_LAYERS, True), (True, 12, False), (False, devices.ALL_LAYERS, False), (False, 0, False)])
def test_on_by_default_only_with_every_layer_on_a_gpu(monkeypatch, gpu, layers, expected):
    monkeypatch.setattr(devices, "has_gpu", lambda: gpu)
    monkeypatch.setattr(devices, "gpu_backends", lambda: frozenset({"CUDA"}) if gpu else frozenset())
    assert device_sampling.wanted(_options(n_gpu_layers=layers)) is expected


@pytest.mark.parametrize(("backends", "expected"), [
    ({"CUDA"}, True), ({"Vulkan"}, False), ({"CUDA", "Vulkan"}, False), ({"Metal"}, False)])
def test_on_by_default_only_on_cuda(monkeypatch, backends, expected):
    """llama.cpp's backend samplers corrupted memory on Vulkan (Mesa's software device)."""
    monkeypatch.setattr(devices, "has_gpu", lambda: True)
    monkeypatch.setattr(devices, "gpu_backends", lambda: frozenset(backends))
    assert device_sampling.wanted(_options()) is expected


@pytest.mark.parametrize("forced", [True, False])
def test_the_manifest_decides_when_it_says(monkeypatch, forced):
    monkeypatch.setattr(devices, "has_gpu", lambda: not forced)
    assert device_sampling.wanted(_options(device_sampling=forced, n_gpu_layers=0)) is forced
