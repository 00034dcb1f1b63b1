"""KV_CACHE_S3: the saved prompt prefixes shared through S3 (or any S3-compatible store).

Objects are `PREFIX/NAMESPACE/NAME.kvprefix`, the same bytes as the files on the volume; the prefix
store decides what to list, read, fetch and upload, and checks every file it fetches (signature and
bounds). Only names the store itself would write (hex digest + suffix) and sizes within the namespace's
bound are listed, and no transfer reads more than that bound, so a stray, hostile or huge object never
becomes a path on the volume nor fills memory or disk.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from handler.store.prefixes import RejectedFile
from handler.store.s3 import S3Tuning, make_client

NAME = re.compile(r"[0-9a-f]{32}\.kvprefix")
SPACE = re.compile(r"[0-9a-f]{32}")
CHUNK = 1 << 20
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

    def drop_connections(self) -> bool:
        """Close the client's connections (before a process snapshot); the next call opens new ones."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        return client is not None

    def _key(self, space: str, name: str) -> str:
        if not SPACE.fullmatch(space) or not NAME.fullmatch(name):
            raise ValueError(f"not a prefix file name: {space}/{name}")
        return f"{self.prefix}{space}/{name}"

    def names(self, space: str, max_bytes: int) -> list[str]:
        folder = f"{self.prefix}{space}/"
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
        listed = ((item["Key"][len(folder):], item.get("Size", 0))
                  for page in pages for item in page.get("Contents", []))
        return [name for name, size in listed if NAME.fullmatch(name) and 0 < size <= max_bytes]

    def read_head(self, space: str, name: str, length: int) -> bytes:
        reply = self._s3().get_object(Bucket=self.bucket, Key=self._key(space, name), Range=f"bytes=0-{length - 1}")
        return bytes(reply["Body"].read(length))

    def fetch(self, space: str, name: str, destination: Path, max_bytes: int) -> None:
        """The object into `destination`; RejectedFile past `max_bytes` (checked before and while reading)."""
        key = self._key(space, name)
        if self._s3().head_object(Bucket=self.bucket, Key=key)["ContentLength"] > max_bytes:
            raise RejectedFile(f"{name} is larger than a prefix file of this model can be")
        body = self._s3().get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        written = 0
        with destination.open("wb") as file:
            while chunk := body.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:  # replaced by a larger object since the HEAD
                    raise RejectedFile(f"{name} is larger than a prefix file of this model can be")
                file.write(chunk)

    def upload(self, space: str, path: Path) -> None:
        self._s3().upload_file(str(path), self.bucket, self._key(space, path.name))
