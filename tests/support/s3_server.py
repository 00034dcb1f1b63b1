"""moto's S3 in server mode on loopback, for tests and `just dev-s3`.

Wrapped so tests can see what the server was asked: `GET /_test/stats` returns, per object path,
how many downloads started (GETs from byte 0) and how many GETs and HEADs arrived. With
`--bytes-per-second N` object bodies are sent slowly, so a test can kill the server mid-download.
Run: `python -m tests.support.s3_server --port PORT [--bytes-per-second N]`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

CHUNK = 64 * 1024


class Recording:
    def __init__(self, app: Any, bytes_per_second: int) -> None:
        self.app, self.bytes_per_second = app, bytes_per_second
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: {"downloads": 0, "gets": 0, "heads": 0})
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == "/_test/stats":
            start_response("200 OK", [("Content-Type", "application/json")])
            with self.lock:
                return [json.dumps(self.stats).encode()]
        is_object = path.count("/") >= 2 and not path.endswith("/")
        if is_object and method in ("GET", "HEAD"):
            with self.lock:
                entry = self.stats[path]
                entry["heads" if method == "HEAD" else "gets"] += 1
                if method == "GET" and environ.get("HTTP_RANGE", "bytes=0-").startswith("bytes=0-"):
                    entry["downloads"] += 1
        body = self.app(environ, start_response)
        return self._slow(body) if self.bytes_per_second and is_object and method == "GET" else body

    def _slow(self, body: Iterable[bytes]) -> Iterator[bytes]:
        for block in body:
            for start in range(0, len(block), CHUNK):
                time.sleep(CHUNK / self.bytes_per_second)
                yield block[start:start + CHUNK]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes-per-second", type=int, default=0)
    args = parser.parse_args()
    app = Recording(DomainDispatcherApplication(create_backend_app), args.bytes_per_second)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"s3 ready on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
