"""llama.cpp's log through one callback: printed as llama-cpp-python prints it (errors only, unless
VERBOSE), and the warnings and errors of the current thread kept, so a failed load can say why
(llama-cpp-python's own exception only says "Failed to load model from file"), and the sizes of the
buffers it allocates (what a loaded model really costs)."""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import sys
import threading

import llama_cpp
from llama_cpp._internals import LlamaModel
from llama_cpp._logger import logger as llama_logger

from handler.engine.types import Footprint

# ggml's levels (ggml.h: none, debug, info, warn, error, continued). llama-cpp-python's own table
# predates the debug level and maps them one off: its quiet mode printed warnings and hid errors.
_DEBUG, _INFO, _WARN, _ERROR, _CONTINUED = 1, 2, 3, 4, 5
_LEVELS = {0: logging.INFO, _DEBUG: logging.DEBUG, _INFO: logging.INFO, _WARN: logging.WARNING,
           _ERROR: logging.ERROR}
_KEPT = 8  # messages per thread
# "CPU_Mapped model buffer size = 92.10 MiB", "CUDA0 KV buffer size = …", "CUDA_Host compute buffer size = …"
_BUFFER = re.compile(r"(\S+)\s+(?:\S+\s+)?buffer size =\s*([0-9.]+) MiB")
_BUFFER_LINE = b"buffer size ="  # the lines `_BUFFER` reads
_MIB = 1024 * 1024
_local = threading.local()


def _messages() -> collections.deque[str]:
    if not hasattr(_local, "messages"):
        _local.messages, _local.level, _local.buffers = collections.deque(maxlen=_KEPT), _INFO, Footprint()
    return _local.messages


@llama_cpp.llama_log_callback
def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    kept = _messages()
    continued = level == _CONTINUED
    level = _local.level if continued else level
    _local.level = level
    printed = llama_logger.level <= _LEVELS.get(level, logging.DEBUG)
    if not printed and level not in (_WARN, _ERROR) and _BUFFER_LINE not in text:
        # Most lines end here: ~2,100 of a small model's ~2,300 at load are debug lines (one per weight
        # tensor, one per graph input); decoding and searching each cost a load ~45 ms here.
        return
    message = text.decode("utf-8", errors="replace")
    if printed:
        print(message, end="", flush=True, file=sys.stderr)
    if (allocated := _BUFFER.search(message)) is not None:
        _local.buffers += buffer_footprint(allocated.group(1), round(float(allocated.group(2)) * _MIB))
    if level not in (_WARN, _ERROR):
        return
    if continued and kept:
        kept[-1] += message
    else:
        kept.append(message)


def install() -> None:
    """Route llama.cpp's log here (replacing llama-cpp-python's printer, which this one includes); errors
    only until a model's VERBOSE says otherwise."""
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))


def buffer_footprint(buffer_type: str, size: int) -> Footprint:
    """Where a buffer of ggml's `buffer_type` lives: the CPU's own buffers and a GPU backend's pinned
    host buffers ("CUDA_Host", "Vulkan_Host") are host memory; the rest is on a device."""
    on_host = buffer_type.startswith("CPU") or buffer_type.endswith("_Host")
    return Footprint(host=size) if on_host else Footprint(device=size)


def take_buffers() -> Footprint:
    """The buffers llama.cpp reported allocating on this thread since the last call, host and device."""
    _messages()
    allocated, _local.buffers = _local.buffers, Footprint()
    return allocated


def take_messages() -> list[str]:
    """The warnings and errors llama.cpp logged on this thread since the last call."""
    kept = _messages()
    messages = [" ".join(message.split()) for message in kept if not message.isspace()]
    kept.clear()
    return messages


install()


def open_model(path: str, params: llama_cpp.llama_model_params) -> LlamaModel:
    """llama.cpp's model for `path`, read without touching the process's stdout and stderr.

    llama-cpp-python's quiet load (`verbose=False`) points file descriptors 1 and 2 at /dev/null while
    it reads: every other thread's log lines are lost meanwhile, and two loads at once (a warm load
    beside a size estimate) can leave them there for good. llama.cpp's own log comes through `_on_log`
    already, filtered by VERBOSE, so nothing is gained by the redirect."""
    return LlamaModel(path_model=path, params=params, verbose=True)
