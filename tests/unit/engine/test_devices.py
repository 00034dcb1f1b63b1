"""GPU-aware defaults: every layer on the GPU when the build sees one, none otherwise; the start log
names the devices."""

from __future__ import annotations

import pytest

from handler.engine import devices, threads
from handler.engine.devices import Device
from handler.settings import Settings
from handler.wiring import describe_devices, llama_defaults

CPU = Device(name="CPU", description="a CPU", kind="cpu", memory_total_bytes=1, memory_free_bytes=1)
GPU = Device(name="CUDA0", description="NVIDIA H200", kind="gpu", memory_total_bytes=2, memory_free_bytes=2)


def test_this_build_lists_its_cpu():
    assert any(device.kind == "cpu" for device in devices.devices())


@pytest.mark.parametrize(("found", "offload", "layers"), [
    ((CPU,), False, 0), ((CPU,), True, 0), ((CPU, GPU), True, -1), ((CPU, GPU), False, 0)])
def test_gpu_layers_default_to_all_with_a_gpu(monkeypatch, found, offload, layers):
    monkeypatch.setattr(devices, "devices", lambda: found)
    monkeypatch.setattr(devices.llama_cpp, "llama_supports_gpu_offload", lambda: offload)
    assert devices.default_gpu_layers() == layers
    assert llama_defaults(Settings.from_env({})).n_gpu_layers == layers
    assert llama_defaults(Settings.from_env({"N_GPU_LAYERS": "7"})).n_gpu_layers == 7


def test_the_start_log_names_the_devices(monkeypatch):
    monkeypatch.setattr(devices, "devices", lambda: (CPU, GPU))
    monkeypatch.setattr(devices.llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(threads, "built_with_openmp", lambda: False)
    assert describe_devices(Settings.from_env({})) == ("devices: CPU (cpu, a CPU), CUDA0 (gpu, NVIDIA H200); "
                                                       "GPU layers: all (auto); CPU thread pools: ggml's, one per model")
    monkeypatch.setattr(threads, "built_with_openmp", lambda: True)
    assert "build llama-cpp-python with -DGGML_OPENMP=OFF" in describe_devices(Settings.from_env({}))


def test_gpu_backends_are_device_names_without_their_index(monkeypatch):
    vulkan = Device(name="Vulkan1", description="a GPU", kind="igpu", memory_total_bytes=1, memory_free_bytes=1)
    monkeypatch.setattr(devices, "devices", lambda: (CPU, GPU, vulkan))
    assert devices.gpu_backends() == frozenset({"CUDA", "Vulkan"})
