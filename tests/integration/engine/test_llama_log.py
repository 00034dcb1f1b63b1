"""Reading a model never points the process's stdout or stderr elsewhere: other threads log meanwhile
(the warm load runs while the app starts), and two loads at once must not lose the log for good."""

from __future__ import annotations

import os
import sys

import pytest

from handler.engine.batching import BatchingChatModel
from handler.engine.early import load_weights
from handler.engine.embedding import EmbeddingModel
from handler.engine.llama_options import ModelOptions
from handler.engine.memory import estimate_bytes
from tests.support.devices import GPU_LAYERS

STANDARD_STREAMS = {1, 2}


@pytest.fixture
def redirected(monkeypatch) -> list[int]:
    """The descriptors llama-cpp-python dup2'd onto while the test ran (pytest's capture does its own)."""
    targets: list[int] = []
    real_dup2 = os.dup2

    def recording_dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
        if sys._getframe(1).f_globals.get("__name__", "").startswith("llama_cpp"):
            targets.append(fd2)
        return real_dup2(fd, fd2, inheritable)

    monkeypatch.setattr(os, "dup2", recording_dup2)
    return targets


def _options(**overrides) -> ModelOptions:
    return ModelOptions(**{"n_ctx": 512, "n_batch": 128, "n_threads": 2, "n_gpu_layers": GPU_LAYERS, "n_parallel": 1,
                           **overrides})


def test_no_load_redirects_stdout_or_stderr(redirected, demo_model_path):
    assert estimate_bytes(demo_model_path, _options(), "chat").total > 0
    load_weights(demo_model_path, _options(), chat=True).close()
    BatchingChatModel("chat", demo_model_path, _options()).close()
    EmbeddingModel("embed", demo_model_path, _options()).close()
    assert not STANDARD_STREAMS & set(redirected)


def test_a_quiet_load_prints_nothing(capfd, demo_model_path):
    assert estimate_bytes(demo_model_path, _options(), "chat").total > 0
    load_weights(demo_model_path, _options(verbose=False), chat=True).close()
    assert capfd.readouterr() == ("", "")
