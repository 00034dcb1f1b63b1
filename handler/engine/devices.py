"""The compute devices this llama.cpp build sees (ggml's backend registry), and the GPU-aware
defaults that follow from them: every layer on the GPU when there is one, none otherwise.

llama-cpp-python binds no ggml device functions, so the few needed are read from the same libggml
its libllama loads."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Literal

import attrs
import llama_cpp

DeviceKind = Literal["cpu", "gpu", "igpu", "accel", "meta"]
_KINDS: tuple[DeviceKind, ...] = ("cpu", "gpu", "igpu", "accel", "meta")  # ggml_backend_dev_type's order
ALL_LAYERS = -1


@attrs.frozen
class Device:
    name: str
    description: str
    kind: DeviceKind
    memory_total_bytes: int
    memory_free_bytes: int

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("gpu", "igpu")


def ggml_library(name: str) -> ctypes.CDLL | None:
    """One of the ggml libraries llama-cpp-python's libllama loads (None in a build laid out otherwise)."""
    try:
        return ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / name))
    except OSError:
        return None


def _ggml() -> ctypes.CDLL | None:
    ggml = ggml_library("libggml.so")
    if ggml is None:
        return None
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype, ggml.ggml_backend_dev_get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(ggml, name).restype, getattr(ggml, name).argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    ggml.ggml_backend_dev_type.restype, ggml.ggml_backend_dev_type.argtypes = ctypes.c_int, [ctypes.c_void_p]
    ggml.ggml_backend_dev_memory.restype = None
    ggml.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                             ctypes.POINTER(ctypes.c_size_t)]
    return ggml


@functools.cache
def devices() -> tuple[Device, ...]:
    """Every device of the build (the CPU included), read once."""
    ggml = _ggml()
    if ggml is None:  # a build laid out differently: what llama.cpp itself says
        return ()
    found = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        kind = ggml.ggml_backend_dev_type(device)
        found.append(Device(name=ggml.ggml_backend_dev_name(device).decode(errors="replace"),
                            description=ggml.ggml_backend_dev_description(device).decode(errors="replace"),
                            kind=_KINDS[kind] if 0 <= kind < len(_KINDS) else "accel",
                            memory_total_bytes=total.value, memory_free_bytes=free.value))
    return tuple(found)


def has_gpu() -> bool:
    """Whether this build can offload layers and sees a GPU to put them on."""
    return bool(llama_cpp.llama_supports_gpu_offload()) and any(device.is_gpu for device in devices())


def gpu_backends() -> frozenset[str]:
    """The backends of the GPUs this build sees: a device's name without its index ("CUDA", "Vulkan", …)."""
    return frozenset(device.name.rstrip("0123456789") for device in devices() if device.is_gpu)


def default_gpu_layers() -> int:
    """N_GPU_LAYERS when it is not set: all layers with a GPU, none without."""
    return ALL_LAYERS if has_gpu() else 0
