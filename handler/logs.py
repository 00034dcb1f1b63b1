"""Logging: one JSON object per line when stderr is not a terminal (containers, log shippers), plain
text for people at a terminal. Every record carries the request id of the request it belongs to."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            entry["request_id"] = request_id
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """One record, one line: a request path with %0A must not forge a second log line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        extra = "".join(f" {key}={value}" for key, value in vars(record).items() if key not in _STANDARD)
        return escape_controls(line + extra)


def configure_logging(*, json_lines: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    json_lines = not sys.stderr.isatty() if json_lines is None else json_lines
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if json_lines else text)
    # Our own logger tree, not the root: granian configures the root logger in each worker after import.
    ours = logging.getLogger("handler")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
