"""One thread per model, taking jobs in arrival order, with a bounded waiting line.

llama-cpp-python's `Llama` is not thread-safe, so every call into one model runs on that model's
single worker thread. Requests beyond `max_waiting` are refused at once (429) rather than queued
without bound, and a request that waits longer than `timeout_s` for its turn gives up (503) and is
skipped when its turn comes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from handler.errors import Overloaded, ServiceUnavailable

T = TypeVar("T")


@attrs.frozen
class QueueLimits:
    max_waiting: int = 32
    timeout_s: float = 120.0


class ModelWorker:
    def __init__(self, name: str, limits: QueueLimits) -> None:
        self.name, self.limits = name, limits
        self.waiting = 0  # requests submitted whose turn has not come yet
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

    async def start(self, job: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `job`; return its future once it is running (or raise if refused or timed out)."""
        if self.waiting >= self.limits.max_waiting:
            raise Overloaded(f"{self.waiting} requests are already waiting for model '{self.name}'",
                             headers={"Retry-After": "2"})
        loop = asyncio.get_running_loop()
        started, abandoned = asyncio.Event(), threading.Event()

        def turn() -> T | None:
            loop.call_soon_threadsafe(started.set)
            return None if abandoned.is_set() else job(*args)

        self.waiting += 1
        try:
            future = self._executor.submit(turn)
            await asyncio.wait_for(started.wait(), self.limits.timeout_s)
        except TimeoutError:
            abandoned.set()
            raise ServiceUnavailable(f"waited {self.limits.timeout_s:g}s for model '{self.name}'",
                                     code="queue_timeout", headers={"Retry-After": "5"}) from None
        except BaseException:
            abandoned.set()  # cancelled while waiting (client gone): skip the job
            raise
        finally:
            self.waiting -= 1
        return future

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(await self.start(job, *args))

    def close(self, final: Callable[[], Any]) -> None:
        """Run `final` after the jobs already queued, then let the thread end."""
        self._executor.submit(final)
        self._executor.shutdown(wait=False)
