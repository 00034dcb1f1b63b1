"""Model sync vs a plain boto3 `download_file` of the same object from moto's S3 (loopback).

Prints the medians and the ratio (plain time / our time: above 1.0 means our sync is faster).
Our sync also computes the sha256 while streaming, fsyncs and publishes atomically.
Usage: `just bench-sync [MB]` (default 100 MB).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import boto3

from bench.common import CREDENTIALS, moto_s3, summary, timed
from handler.store.catalog import ModelCatalog
from handler.store.manifest import ModelSpec
from handler.store.model_store import ModelStore, StoreConfig
from handler.store.s3 import S3Tuning

REPEATS = 3


def main(megabytes: int = 100) -> None:
    os.environ.update(CREDENTIALS)
    payload = os.urandom(megabytes * 1024 * 1024)
    spec = ModelSpec(name="bench", kind="chat", source="s3://bench/model.gguf",
                     sha256=hashlib.sha256(payload).hexdigest())
    with moto_s3() as endpoint, tempfile.TemporaryDirectory() as scratch:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
        client = boto3.client("s3")
        client.create_bucket(Bucket="bench")
        client.put_object(Bucket="bench", Key="model.gguf", Body=payload)
        del payload

        def plain() -> None:
            target = Path(scratch) / "plain.gguf"
            client.download_file("bench", "model.gguf", str(target))
            target.unlink()

        def ours() -> None:
            volume = Path(tempfile.mkdtemp(dir=scratch))
            store = ModelStore(ModelCatalog(volume, (spec,)), StoreConfig(tuning=S3Tuning()))
            asyncio.run(store.ensure_local(spec))
            (volume / "model.gguf").unlink()

        plain_runs, our_runs = timed(plain, REPEATS), timed(ours, REPEATS)
    print(f"object: {megabytes} MB on moto S3 (loopback)")
    print(f"plain boto3 download_file : {summary(plain_runs)}")
    print(f"ModelStore sync (+sha256) : {summary(our_runs)}")
    print(f"ratio plain/ours          : {statistics.median(plain_runs) / statistics.median(our_runs):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
