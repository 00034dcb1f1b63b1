"""The host-memory tier of saved prompt prefixes (KV_CACHE_RAM_MB), between the slots and the volume:
states this process copied out of its own models — a prompt just read, a conversation whose slot was
taken by another — kept in memory, least recently used out. A conversation evicted from its slot comes
back from here instead of being read again or loaded from the volume.

Only this process writes here, so nothing in it needs a signature; each state's bounds were checked
when it was copied out (at most a quarter of the budget)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence

import attrs

Key = tuple[str, tuple[int, ...]]  # (namespace, tokens)


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


# A sequence's KV state: bytes read from a file, or the bytearray llama.cpp copied it into (kept as
# it is: a large model's state is hundreds of MB, and converting it was one more copy on the scheduler).
State = bytes | bytearray


@attrs.frozen
class RamPrefix:
    tokens: tuple[int, ...]
    state: State
    common: int  # leading tokens shared with the prompt that asked


class RamTier:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._states: collections.OrderedDict[Key, State] = collections.OrderedDict()
        self._bytes = 0

    @property
    def max_state_bytes(self) -> int:
        return self.budget_bytes // 4

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def put(self, space: str, tokens: Sequence[int], state: State) -> bool:
        """Keep `state` (the KV of exactly `tokens`); False when it is larger than a quarter of the budget.
        A state whose tokens extend a kept one replaces it (the longer serves every prompt the shorter did)."""
        if not state or len(state) > self.max_state_bytes:
            return False
        key = (space, tuple(tokens))
        with self._lock:
            for other in [other for other in self._states if other[0] == space and other != key
                          and common_length(other[1], key[1]) == len(other[1])]:
                self._bytes -= len(self._states.pop(other))
            self._bytes -= len(self._states.pop(key, b""))
            self._states[key] = state
            self._bytes += len(state)
            while self._bytes > self.budget_bytes:
                self._bytes -= len(self._states.popitem(last=False)[1])
        return True

    def best(self, space: str, prompt: Sequence[int]) -> RamPrefix | None:
        """The kept state sharing the most leading tokens with `prompt` (marked as just used)."""
        with self._lock:
            scored = [(common_length(key[1], prompt), key) for key in self._states if key[0] == space]
            if not scored:
                return None
            common, key = max(scored)
            if common == 0:
                return None
            self._states.move_to_end(key)
            return RamPrefix(key[1], self._states[key], common)

    def holds(self, space: str, tokens: Sequence[int]) -> bool:
        """Whether a kept state already covers all of `tokens`."""
        with self._lock:
            return any(key[0] == space and common_length(key[1], tokens) >= len(tokens) for key in self._states)

    def known(self, space: str) -> list[tuple[int, ...]]:
        with self._lock:
            return [key[1] for key in self._states if key[0] == space]

    def drop(self, space: str, tokens: Sequence[int]) -> None:
        with self._lock:
            self._bytes -= len(self._states.pop((space, tuple(tokens)), b""))


@attrs.define
class Rate:
    """How fast something goes here (units per second), a moving average of what was measured."""

    per_second: float | None = None
    weight: float = 0.3
    measured_at: float = 0.0

    def record(self, amount: float, seconds: float) -> None:
        if amount <= 0 or seconds <= 0:
            return
        rate = amount / seconds
        self.per_second = rate if self.per_second is None else (1 - self.weight) * self.per_second + self.weight * rate
        self.measured_at = time.monotonic()

    def seconds_for(self, amount: float) -> float | None:
        """How long `amount` would take, or None before anything was measured."""
        return None if self.per_second is None else amount / self.per_second
