"""The server process's start: Python's cyclic collector stays off while the app is imported and built,
and what the start made is set aside from later collections."""

from __future__ import annotations

import gc

import pytest

from handler.serve import without_collections


@pytest.fixture(autouse=True)
def _thaw():
    yield
    gc.unfreeze()  # the freeze took every object of the test process: they are collected again


def test_the_collector_is_off_during_the_start_and_its_objects_frozen_after():
    with without_collections():
        assert not gc.isenabled()
        made = [[] for _ in range(10)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_a_failed_start_still_turns_the_collector_back_on():
    with pytest.raises(RuntimeError), without_collections():
        raise RuntimeError("the app could not be built")
    assert gc.isenabled()
