"""Starting the test S3 server and putting objects in it (real boto3 calls over loopback)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

from tests.conftest import REPO

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, port: int, bytes_per_second: int = 0) -> None:
        self.port, self.bytes_per_second = port, bytes_per_second
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> S3Server:
        command = [sys.executable, "-m", "tests.support.s3_server", "--port", str(self.port),
                   "--bytes-per-second", str(self.bytes_per_second)]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, **CREDENTIALS})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.endpoint}/_test/stats", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the test S3 server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def upload(self, bucket: str, key: str, source: Path | bytes) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        if isinstance(source, bytes):
            client.put_object(Bucket=bucket, Key=key, Body=source)
        else:
            client.upload_file(str(source), bucket, key)

    def stats(self, bucket: str, key: str) -> dict[str, int]:
        stats = httpx.get(f"{self.endpoint}/_test/stats", timeout=5).json()
        return stats.get(f"/{bucket}/{key}", {"downloads": 0, "gets": 0, "heads": 0})

    def app_env(self) -> dict[str, str]:
        """What the app needs to use this server: the standard AWS variables, nothing of ours."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.endpoint}
