"""Optional API keys: `Authorization: Bearer KEY`, or `x-api-key: KEY` (as Anthropic's clients send it),
compared in constant time. Off when API_KEY is unset.

Route handlers marked `opt={"public": True}` (the health probes) stay open.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from handler.errors import Unauthorized

TENANT = "tenant"  # the request state's key for `tenant_of` the request's key


def request_tenant(scope_state: Any) -> str:
    """The tenant the guard found for this request ("" without API keys)."""
    return str(scope_state.get(TENANT, "")) if isinstance(scope_state, dict) else ""


def tenant_of(keys: tuple[str, ...], key: str) -> str:
    """Whose request this is, as far as reusing prompts' KV state goes: with several API keys each key
    is a tenant (a salt derived here from the key, never taken from the request), so one key's prompts
    are never reused for another's and their timing reveals nothing across keys; one key or none is
    one tenant."""
    if len(keys) < 2:
        return ""
    return hashlib.sha256(b"serverless-gguf tenant\0" + key.encode()).hexdigest()[:32]


def api_key_guard(keys: tuple[str, ...]) -> Guard:
    encoded = [key.encode() for key in keys]

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not encoded or handler.opt.get("public"):
            return
        scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
        if not scheme and "x-api-key" in connection.headers:
            scheme, presented = "bearer", connection.headers["x-api-key"]
        candidate = presented.strip().encode()
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(candidate, key)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthorized("Incorrect or missing API key: send 'Authorization: Bearer <key>' "
                               "or 'x-api-key: <key>'.")
        connection.scope.setdefault("state", {})[TENANT] = tenant_of(keys, presented.strip())

    return guard
