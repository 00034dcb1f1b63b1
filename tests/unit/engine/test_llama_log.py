"""llama.cpp's log levels are ggml's (debug 1 … error 4, 5 continues the previous line): a quiet
process prints errors only, and a failed load keeps the warnings and errors that say why."""

from __future__ import annotations

import ctypes
import logging

import pytest
from llama_cpp._logger import logger as llama_logger

from handler.engine import llama_log
from handler.engine.types import Footprint

DEBUG, INFO, WARN, ERROR, CONTINUED = 1, 2, 3, 4, 5


@pytest.fixture
def quiet():
    level = llama_logger.level
    llama_logger.setLevel(logging.ERROR)
    llama_log.take_messages()
    yield
    llama_logger.setLevel(level)


def _log(level: int, text: str) -> None:
    llama_log._on_log(level, text.encode(), ctypes.c_void_p(0))


def test_a_quiet_process_prints_errors_only(quiet, capsys):
    _log(INFO, "loading\n")
    _log(WARN, "a token looks like a control token\n")
    _log(ERROR, "failed to read ")
    _log(CONTINUED, "tensor 3\n")
    _log(DEBUG, "details\n")
    assert capsys.readouterr().err == "failed to read tensor 3\n"


def test_warnings_and_errors_are_kept_for_the_load_that_failed(quiet):
    _log(INFO, "loading\n")
    _log(WARN, "a token looks like a control token\n")
    _log(CONTINUED, " (overridden)\n")
    _log(ERROR, "failed to read ")
    _log(CONTINUED, "tensor 3\n")
    _log(INFO, "freeing\n")
    _log(CONTINUED, " buffers\n")
    assert llama_log.take_messages() == ["a token looks like a control token (overridden)", "failed to read tensor 3"]


def test_buffers_are_counted_where_they_live(quiet):
    """What a load allocates, from llama.cpp's own lines: the CPU's buffers and a GPU backend's pinned
    host buffers are host memory, a device's buffers are GPU memory (one sum of both hid which ran out)."""
    llama_log.take_buffers()
    for line in ("load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n",
                 "load_tensors:        CUDA0 model buffer size =  4400.00 MiB\n",
                 "llama_kv_cache:      CUDA0 KV buffer size =   576.00 MiB\n",
                 "llama_context:  CUDA_Host  output buffer size =     0.58 MiB\n",
                 "sched_reserve:      CUDA0 compute buffer size =   300.75 MiB\n",
                 "sched_reserve:  CUDA_Host compute buffer size =    16.01 MiB\n",
                 "~llama_context:        CPU compute buffer size is  98.2520 MiB, matches expectation\n"):
        _log(INFO, line)
    mib = 1024 * 1024
    assert llama_log.take_buffers() == Footprint(host=round(92.10 * mib) + round(0.58 * mib) + round(16.01 * mib),
                                                 device=round((4400.00 + 576.00 + 300.75) * mib))
    assert llama_log.take_buffers() == Footprint()


def test_a_verbose_process_prints_every_line(capsys):
    """VERBOSE: llama.cpp's debug lines too, which a quiet process drops before reading them."""
    level = llama_logger.level
    llama_logger.setLevel(logging.DEBUG)
    try:
        _log(DEBUG, "create_tensor: loading tensor blk.0.attn_q.weight\n")
        _log(INFO, "loading\n")
    finally:
        llama_logger.setLevel(level)
    assert capsys.readouterr().err == "create_tensor: loading tensor blk.0.attn_q.weight\nloading\n"
