"""llama.cpp's log levels are ggml's (debug 1 … error 4, 5 continues the previous line): a quiet
process prints errors only, and a failed load keeps the warnings and errors that say why."""

from __future__ import annotations

import ctypes
import logging

import pytest
from llama_cpp._logger import logger as llama_logger

from handler.engine import llama_log

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
