"""Weights read early are adopted only for the same file, unchanged, with the same placement; anything
else is freed, and so is whatever the warm set never took."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from handler.engine.early import EARLY_SWITCH_INTERVAL_S, EarlyWeights, Weights
from handler.engine.types import Footprint


class _Model:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    return path


def _started(early: EarlyWeights, path, key=("cpu",), gate: threading.Event | None = None) -> _Model:
    model = _Model()

    def load(_path):
        if gate is not None:
            gate.wait(10)
        return Weights(model, None, Footprint(host=123))

    early.start(path, key, load)
    return model


def test_the_same_file_and_options_are_adopted_once(model_file):
    early = EarlyWeights()
    gate = threading.Event()
    model = _started(early, model_file, gate=gate)
    gate.set()  # take() waits for the load that is under way
    taken = early.take(model_file, ("cpu",))
    assert taken is not None and taken.model is model and taken.buffers == Footprint(host=123) and not model.closed
    assert early.take(model_file, ("cpu",)) is None  # taken once


def test_other_options_or_a_changed_file_free_the_weights(model_file):
    early = EarlyWeights()
    model = _started(early, model_file)
    assert early.take(model_file, ("gpu",)) is None and model.closed
    model = _started(early, model_file)
    stat = model_file.stat()
    os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # rewritten since the read
    assert early.take(model_file, ("cpu",)) is None and model.closed


def test_a_failed_early_load_leaves_the_usual_load(model_file):
    early = EarlyWeights()

    def fail(_path):
        raise RuntimeError("no")

    early.start(model_file, ("cpu",), fail)
    assert early.take(model_file, ("cpu",)) is None


def test_a_missing_file_starts_nothing_and_leftovers_are_released(tmp_path, model_file):
    early = EarlyWeights()
    early.start(tmp_path / "absent.gguf", ("cpu",), lambda _path: pytest.fail("nothing to load"))
    model = _started(early, model_file)
    assert early.release() == [model_file] and model.closed
    assert early.take(model_file, ("cpu",)) is None


@pytest.mark.parametrize("fails", [False, True])
def test_the_gil_switches_often_while_the_load_runs_and_as_before_after(model_file, fails):
    early = EarlyWeights()
    default = sys.getswitchinterval()
    seen: list[float] = []

    def load(_path):
        seen.append(sys.getswitchinterval())
        if fails:
            raise OSError("unreadable")
        return Weights(_Model(), None, Footprint())

    early.start(model_file, ("cpu",), load)
    early.take(model_file, ("cpu",))  # waits for the load's end
    assert seen == [pytest.approx(min(default, EARLY_SWITCH_INTERVAL_S), rel=0.01)] and seen[0] < default
    assert sys.getswitchinterval() == default
