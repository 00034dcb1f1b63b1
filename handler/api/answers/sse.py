"""Server-Sent Events framing: OpenAI's `data: <json>` events closed by `data: [DONE]`, and the named
events (`event: <type>`) of the Responses and Messages streams."""

from __future__ import annotations

from typing import Any

import msgspec

DONE = b"data: [DONE]\n\n"
_encoder = msgspec.json.Encoder()


def sse_event(payload: Any) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def named_event(kind: str, payload: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"
