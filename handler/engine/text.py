"""Turning generated tokens into text: stop strings that may span tokens, and nothing emitted early."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Holds back text that could be the start of a stop string; reports when one is complete.

    `push` returns (text safe to emit, the stop string hit or None). On a hit the text before the
    stop string is emitted and the rest dropped, as OpenAI does.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""

    def push(self, text: str) -> tuple[str, str | None]:
        if not self._stops:
            return text, None
        pending = self._pending + text
        hits = [(at, stop) for stop in self._stops if (at := pending.find(stop)) >= 0]
        if hits:
            self._pending = ""
            at, stop = min(hits, key=lambda hit: hit[0])
            return pending[:at], stop
        keep = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(pending)), keep, -1):
                if pending.endswith(stop[:size]):
                    keep = size
                    break
        self._pending = pending[len(pending) - keep:]
        return pending[: len(pending) - keep], None

    def flush(self) -> str:
        pending, self._pending = self._pending, ""
        return pending
