"""POST /admin/snapshot/prepare and /admin/snapshot/resume: hooks for platforms that checkpoint a warmed
process and restore it later, elsewhere (Modal's memory snapshots, CRIU, GKE pod snapshots).

Run with SNAPSHOT_READY=true, so the weights are read into the process (no memory-mapped file the
restored process would need at the same path). `prepare`, once the warm set is ready and no request is
in flight, closes what a restored process must not inherit: the S3 clients' pooled connections (the
model store's and the shared prefixes'); nothing else stays open between requests. `resume`, called
right after a restore, restarts the idle clock of every loaded model (the monotonic clock of another
machine, or hours later, would unload them at once); S3 clients reconnect on their next use."""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Controller, post

from handler.api.dependencies import CacheDep, LifecycleDep, PrefixesDep, StoreDep, WarmUpDep
from handler.api.errors import ERROR_RESPONSES
from handler.errors import Conflict, ServiceUnavailable

log = logging.getLogger(__name__)


class SnapshotController(Controller):
    path = "/admin/snapshot"
    tags = ["operations"]

    @post("/prepare", status_code=200, responses=ERROR_RESPONSES,
          summary="Before a process snapshot: the warm set is loaded; S3 connections closed")
    async def prepare(self, model_store: StoreDep, prefixes: PrefixesDep, warmup: WarmUpDep, lifecycle: LifecycleDep,
                      cache: CacheDep) -> dict[str, Any]:
        if not warmup.ready:
            raise ServiceUnavailable("the warm set is not loaded yet: prepare once /health/ready answers 200",
                                     code="not_ready", retry_after_s=1)
        if lifecycle.in_flight:
            raise Conflict(f"{lifecycle.in_flight} request(s) in flight: prepare an idle process")
        closed = await model_store.run_blocking(model_store.drop_connections)
        if prefixes is not None:
            closed = await model_store.run_blocking(prefixes.drop_connections) or closed
        log.info("ready for a snapshot: %s loaded, S3 connections %s", ", ".join(
            entry.spec.name for entry in cache.entries()) or "nothing", "closed" if closed else "none open")
        return {"prepared": True, "models": [entry.spec.name for entry in cache.entries()],
                "closed_connections": closed}

    @post("/resume", status_code=200, responses=ERROR_RESPONSES,
          summary="After a restore: idle clocks restarted; S3 reconnects on its next use")
    async def resume(self, cache: CacheDep) -> dict[str, Any]:
        now = time.monotonic()
        for entry in cache.entries():
            entry.last_used = now
        log.info("resumed from a snapshot")
        return {"resumed": True, "models": [entry.spec.name for entry in cache.entries()]}
