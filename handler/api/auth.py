"""Optional API keys: `Authorization: Bearer KEY`, compared in constant time. Off when API_KEY is unset.

Route handlers marked `opt={"public": True}` (the health probes) stay open.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from handler.errors import Unauthorized


def api_key_guard(keys: tuple[str, ...]) -> Guard:
    encoded = [key.encode() for key in keys]

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not encoded or handler.opt.get("public"):
            return
        scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
        candidate = presented.strip().encode()
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(candidate, key)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthorized("Incorrect or missing API key: send 'Authorization: Bearer <key>'.")

    return guard
