"""S3 (and any S3-compatible store): the only module that imports boto3.

Downloads go through boto3's transfer manager (parallel ranged GETs). The destination is handed to it
as a non-seekable stream, so the manager writes parts in order: the sha256 is computed as the bytes
arrive, with no second read of a multi-GB file, and memory stays bounded by the in-flight parts.
Endpoints, credentials, region and profiles come from the standard AWS chain (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3, AWS_PROFILE, …), so MinIO, R2 and others work unchanged.
boto3 is imported on first use: a server whose models are all local (or verified by sha256) never
pays its import time at a cold start.
"""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import Callable
from typing import IO, Any

import attrs

from handler.errors import InsufficientStorage, ModelSourceError, ServiceUnavailable

MIB = 1024 * 1024
RETRY_AFTER_S = 30


@attrs.frozen
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise ValueError(f"{url!r} is not an s3://bucket/key URL")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@attrs.frozen
class ObjectInfo:
    size: int
    etag: str
    version_id: str | None = None


@attrs.frozen
class S3Tuning:
    part_size_mb: int = 16
    concurrency: int = 8
    max_attempts: int = 5


def make_client(tuning: S3Tuning) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": tuning.max_attempts, "mode": "standard"},
                    max_pool_connections=max(10, tuning.concurrency * 2), connect_timeout=5, read_timeout=60)
    return boto3.session.Session().client("s3", config=config)


def _translate(exc: Exception, where: S3Location) -> Exception:
    """boto errors → our typed errors, naming the object."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InsufficientStorage(f"the disk filled up while syncing {where}; the partial file was removed")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion") or status == 404:
            return ModelSourceError(f"the model object {where} does not exist", code="model_source_missing")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden") or status == 403:
            return ModelSourceError(f"access to the model object {where} was denied ({code})",
                                    code="model_source_access_denied")
        if status is not None and status >= 500:
            return ServiceUnavailable(f"the object store failed for {where} ({code})", code="model_source_unavailable",
                                      retry_after_s=RETRY_AFTER_S)
        return ModelSourceError(f"the object store refused {where}: {code}")
    if isinstance(exc, (EndpointConnectionError, BotoCoreError, OSError)):
        return ServiceUnavailable(f"the object store is unreachable for {where}: {exc}",
                                  code="model_source_unavailable", retry_after_s=RETRY_AFTER_S)
    return exc


def head_object(client: Any, where: S3Location, version_id: str | None = None) -> ObjectInfo:
    try:
        extra = {"VersionId": version_id} if version_id else {}
        head = client.head_object(Bucket=where.bucket, Key=where.key, **extra)
    except Exception as exc:
        raise _translate(exc, where) from exc
    return ObjectInfo(size=int(head["ContentLength"]), etag=str(head.get("ETag", "")).strip('"'),
                      version_id=head.get("VersionId"))


class HashingWriter(io.RawIOBase):
    """Writes through to `sink` while hashing; not seekable, so the transfer manager writes in order."""

    def __init__(self, sink: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._sink, self._on_bytes = sink, on_bytes
        self.sha256 = hashlib.sha256()
        self.written = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sink.write(view)
        self.sha256.update(view)
        self.written += len(view)
        self._on_bytes(len(view))
        return len(view)


def download(client: Any, where: S3Location, sink: IO[bytes], tuning: S3Tuning, *,
             version_id: str | None = None, on_bytes: Callable[[int], None] = lambda _: None) -> tuple[int, str]:
    """Stream the object into `sink`; returns (bytes written, sha256 hex)."""
    from boto3.s3.transfer import TransferConfig

    part = tuning.part_size_mb * MIB
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                            max_concurrency=tuning.concurrency, use_threads=True,
                            preferred_transfer_client="classic")
    writer = HashingWriter(sink, on_bytes)
    try:
        client.download_fileobj(where.bucket, where.key, writer, Config=config,
                                ExtraArgs={"VersionId": version_id} if version_id else None)
    except Exception as exc:
        raise _translate(exc, where) from exc
    return writer.written, writer.sha256.hexdigest()
