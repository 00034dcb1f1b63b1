"""KV_CACHE_S3: the saved prompt prefixes shared through S3 (or any S3-compatible store).

Objects are `PREFIX/NAMESPACE/NAME.kvprefix`, the same bytes as the files on the volume; the engine's
prefix store decides what to list, read, fetch and upload, and checks every file it fetches. Only names
the engine itself would write (hex digest + suffix) are listed, so a stray or hostile object name never
becomes a path on the volume.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from handler.store.s3 import S3Tuning, make_client

NAME = re.compile(r"[0-9a-f]{32}\.kvprefix")
SPACE = re.compile(r"[0-9a-f]{32}")
_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,62})/?(.*)")


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket/prefix/`; ValueError otherwise."""
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix/ URL")
    bucket, prefix = match.groups()
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


class S3PrefixMirror:
    def __init__(self, url: str, tuning: S3Tuning) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.tuning = tuning
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _s3(self) -> Any:
        with self._client_lock:  # the writer thread and request threads share one client
            if self._client is None:
                self._client = make_client(self.tuning)
            return self._client

    def _key(self, space: str, name: str) -> str:
        if not SPACE.fullmatch(space) or not NAME.fullmatch(name):
            raise ValueError(f"not a prefix file name: {space}/{name}")
        return f"{self.prefix}{space}/{name}"

    def names(self, space: str) -> list[str]:
        folder = f"{self.prefix}{space}/"
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
        names = (item["Key"][len(folder):] for page in pages for item in page.get("Contents", []))
        return [name for name in names if NAME.fullmatch(name)]

    def read_head(self, space: str, name: str, length: int) -> bytes:
        reply = self._s3().get_object(Bucket=self.bucket, Key=self._key(space, name), Range=f"bytes=0-{length - 1}")
        return bytes(reply["Body"].read())

    def fetch(self, space: str, name: str, destination: Path) -> None:
        self._s3().download_file(self.bucket, self._key(space, name), str(destination))

    def upload(self, space: str, path: Path) -> None:
        self._s3().upload_file(str(path), self.bucket, self._key(space, path.name))
