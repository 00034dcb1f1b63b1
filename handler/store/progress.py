"""What a model file's sync is doing, for readiness, the pull API and metrics."""

from __future__ import annotations

import time
from typing import Literal

import attrs

# waiting: another process (a worker, a `pull`, an instance sharing the volume) is downloading the file.
SyncState = Literal["pending", "checking", "waiting", "downloading", "verifying", "ready", "failed"]


@attrs.define
class SyncProgress:
    file: str
    state: SyncState = "pending"
    bytes_done: int = 0
    total: int | None = None
    started: float = attrs.field(factory=time.monotonic)
    finished: float | None = None
    error: str | None = None

    def add_bytes(self, count: int) -> None:  # called from the transfer manager's threads
        self.bytes_done += count

    @property
    def in_flight(self) -> bool:
        """Whether the file is being fetched or checked right now."""
        return self.state in ("checking", "waiting", "downloading", "verifying")

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0

    def finish(self, state: SyncState, error: str | None = None) -> None:
        self.state, self.error, self.finished = state, error, time.monotonic()

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "bytes_done": self.bytes_done, "total": self.total,
                "bytes_per_second": round(self.rate), "seconds": round(self.seconds, 3), "error": self.error}
