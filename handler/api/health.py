"""Liveness and readiness probes.

- `GET /health`: liveness, 200 while the process can answer at all. Give it to liveness probes.
- `GET /health/ready` (also `/ready`): 200 once every warm model is synced and loaded, 503 before
  (or when one failed, or while draining), with each warm model's state in the body. Give it to
  startup/readiness probes and to AWS Lambda Web Adapter's readiness check.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Response, get

from handler.api.dependencies import LifecycleDep, WarmUpDep

PUBLIC = {"public": True}  # no API key needed


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    draining: bool
    in_flight: int
    models: dict[str, dict[str, Any]]


@get("/health", tags=["health"], summary="Liveness: 200 while the process lives", opt=PUBLIC)
async def health() -> Health:
    return Health()


@get(["/health/ready", "/ready"], tags=["health"], opt=PUBLIC,
     summary="Readiness: 200 when the warm models are loaded, else 503 with their progress")
async def ready(warmup: WarmUpDep, lifecycle: LifecycleDep) -> Response[Readiness]:
    is_ready = warmup.ready and not lifecycle.draining
    body = Readiness(ready=is_ready, draining=lifecycle.draining, in_flight=lifecycle.in_flight,
                     models=warmup.report())
    return Response(body, status_code=200 if is_ready else 503, headers={} if is_ready else {"Retry-After": "1"})
