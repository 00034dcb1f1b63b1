"""Waiting on a state, bounded in time: tests poll what they wait for instead of sleeping a guess."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 120, interval: float = 0.1) -> bool:
    """True as soon as `predicate()` is truthy; False if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
