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

_WARN, _ERROR, _CONTINUED = 2, 3, 5
_LEVELS = {0: logging.CRITICAL, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.DEBUG,
           5: logging.DEBUG}
_KEPT = 8  # messages per thread
_BUFFER = re.compile(r"buffer size =\s*([0-9.]+) MiB")
_MIB = 1024 * 1024
_local = threading.local()


def _messages() -> collections.deque[str]:
    if not hasattr(_local, "messages"):
        _local.messages, _local.keeping, _local.buffer_bytes = collections.deque(maxlen=_KEPT), False, 0
    return _local.messages


@llama_cpp.llama_log_callback
def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace")
    if llama_logger.level <= _LEVELS.get(level, logging.DEBUG):
        print(message, end="", flush=True, file=sys.stderr)
    kept = _messages()
    if (allocated := _BUFFER.search(message)) is not None:
        _local.buffer_bytes += round(float(allocated.group(1)) * _MIB)
    if level in (_WARN, _ERROR):
        kept.append(message.strip())
        _local.keeping = True
    elif level == _CONTINUED and _local.keeping and kept:
        kept[-1] += message.rstrip()
    else:
        _local.keeping = False


def install() -> None:
    """Route llama.cpp's log here (replacing llama-cpp-python's printer, which this one includes); errors
    only until a model's VERBOSE says otherwise."""
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))


def take_buffer_bytes() -> int:
    """Bytes of the buffers llama.cpp reported allocating on this thread since the last call."""
    _messages()
    allocated, _local.buffer_bytes = _local.buffer_bytes, 0
    return allocated


def take_messages() -> list[str]:
    """The warnings and errors llama.cpp logged on this thread since the last call."""
    kept = _messages()
    messages = [message for message in kept if message]
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
