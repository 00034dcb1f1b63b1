"""Process lifecycle: draining on SIGTERM, requests in flight, the first request after start.

Owned by the app's lifespan. granian forwards SIGTERM to its workers and keeps serving the requests
already in flight; our handler (chained before granian's own) marks the process as draining so that
new generations get 503 + Retry-After, and the lifespan's shutdown waits for the in-flight ones
(up to DRAIN_TIMEOUT_S) before the models are freed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from handler.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, on_drain: Callable[[], Awaitable[None]] | None = None) -> None:
        self._on_drain = on_drain  # started once, when draining begins
        self._drain_task: asyncio.Task[None] | None = None
        self.draining = False
        self.in_flight = 0
        self._first_claimed = False
        self._drain_logged = False
        self._idle = asyncio.Event()
        self._idle.set()

    def install_signal_handlers(self) -> None:
        """Chain before the current SIGTERM/SIGINT handlers (granian's), never replacing them.

        The handler only flips a flag and schedules the rest on the event loop: a signal can land while
        this thread holds a lock (logging's, say), and taking it again inside the handler deadlocks."""
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                self.draining = True
                loop.call_soon_threadsafe(self.start_draining)
                if callable(previous):
                    previous(signum, frame)

            try:
                signal.signal(number, handler)
            except ValueError:  # not the main thread (an in-process test client): the host handles signals
                return

    def start_draining(self) -> None:
        if not self._drain_logged:
            self._drain_logged = True
            log.info("draining: %d request(s) in flight; new generations get 503", self.in_flight)
            if self._on_drain is not None:
                self._drain_task = asyncio.ensure_future(self._on_drain())
        self.draining = True

    async def drained(self) -> None:
        """Wait for the drain started by `start_draining` (its `on_drain`) to finish."""
        if self._drain_task is not None:
            await self._drain_task

    def begin(self) -> bool:
        """Admit one request; returns True for the first request since the process started."""
        if self.draining:
            raise ServiceUnavailable("the server is shutting down; retry on another instance",
                                     code="draining", retry_after_s=1)
        self.in_flight += 1
        self._idle.clear()
        first, self._first_claimed = not self._first_claimed, True
        return first

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
