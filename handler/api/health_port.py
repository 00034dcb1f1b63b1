"""RunPod's load-balancing workers ask for health on a port of their own (PORT_HEALTH): `GET /ping`
answers 204 while the warm set loads, 200 once it is ready, 503 when it failed (or the server drains).
A minimal HTTP/1.1 responder on that port, in each worker (the port is shared, as granian's is)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
_STATUS = {"loading": (204, "No Content"), "ready": (200, "OK"), "failed": (503, "Service Unavailable")}


async def serve_health_port(host: str, port: int, state: Callable[[], str]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, path = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            if method == b"GET" and path.split(b"?")[0] == b"/ping":
                status, reason = _STATUS[state()]
            else:
                status, reason = 404, "Not Found"
            body = b"" if status == 204 else reason.encode()
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port, reuse_port=True, limit=MAX_REQUEST_BYTES)
