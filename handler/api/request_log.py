"""Request ids, baseline response headers, and the one log line per request.

Each request gets an id (the client's `x-request-id` if it sent a sane one, else a new one), echoed in
the response's `x-request-id` and attached to every log record made while serving it. When the
response is complete (for a stream: after its last byte) one line is logged with method, path,
status, duration and what the handler added (model, tokens, time to first token, cold start).
Every response, the framework's 404s included, also carries `X-Content-Type-Options: nosniff` and
`Cache-Control: no-store` (model output is never cacheable by intermediaries).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from handler.logs import REQUEST_ID

log = logging.getLogger("handler.requests")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SUMMARY_KEY = "request_summary"
BASELINE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


def request_summary(scope_state: Any) -> dict[str, Any]:
    """The dict a handler fills in for this request's log line (`request.state`)."""
    return scope_state.setdefault(SUMMARY_KEY, {}) if isinstance(scope_state, dict) else {}


def request_log_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        sent_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent_id if _SANE_ID.fullmatch(sent_id) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in BASELINE_HEADERS if name not in present]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            details = {"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round((time.perf_counter() - started) * 1000), **request_summary(state)}
            if not scope["path"].startswith(("/health", "/ready", "/metrics")):
                log.info("request", extra=details)
            REQUEST_ID.reset(token)

    return middleware
