"""GET /health: liveness. 200 while the process can answer at all."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import get


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


@get("/health", tags=["health"], summary="Liveness: 200 while the process lives")
async def health() -> Health:
    return Health()
