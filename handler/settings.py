"""Process configuration, read once from an environment mapping.

`Settings.from_env(environ)` is a pure function of the mapping it is given, so tests build settings
from plain dicts and never touch `os.environ`. Invalid values raise `SettingsError` naming the variable.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from handler.engine.step_budget import STEP_TARGET_MS
from handler.engine.types import DEFAULT_QUEUE, TEMPERATURE
from handler.store.prefix_mirror import parse_url

T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration variable has a value the server cannot use."""


def physical_cores(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """Count physical cores (llama.cpp decodes no faster on hyper-threads); fall back to logical CPUs."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    return len(cores) or os.cpu_count() or 1


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {raw!r}")


def _parse_gpu_layers(raw: str) -> int | None:
    return None if raw.lower() == "auto" else int(raw)


_PORT_RULE = (lambda v: 0 < v < 65536, "between 1 and 65535")
_ROUTE_RULE = (lambda v: re.fullmatch(r"/[A-Za-z0-9_.\-/]*", v) is not None, "a path such as /predict")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _s3_prefix_url(url: str) -> str:
    parse_url(url)  # ValueError when it is not s3://bucket/prefix/
    return url


def _read(environ: Mapping[str, str], name: str, parse: Callable[[str], T], default: T,
          check: Callable[[T], bool] = lambda _: True, rule: str = "") -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None
    if not check(value):
        raise SettingsError(f"{name}={raw!r} is invalid: must be {rule}")
    return value


# AWS Lambda refuses invocation payloads over 6 MB, and the request's JSON travels inside one (with
# headers and, for binary bodies, base64): bodies above this would fail there before reaching us.
LAMBDA_MAX_BODY_BYTES = 5 * 1024 * 1024


def on_lambda(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME"))


@attrs.frozen
class Settings:
    model_dir: Path = Path("models")
    manifest_path: Path = Path("models_manifest/default.toml")
    host: str = "127.0.0.1"
    port: int = 8000  # PORT; AIP_HTTP_PORT on Vertex AI; 8080 when started as SageMaker's `serve`
    health_port: int | None = None  # PORT_HEALTH: RunPod's load-balancer health port (GET /ping there)
    vertex_health_route: str | None = None  # AIP_HEALTH_ROUTE: readiness at this path too
    vertex_predict_route: str | None = None  # AIP_PREDICT_ROUTE: {"instances": [...]} predictions at this path
    n_ctx: int = 2048
    n_gpu_layers: int | None = None  # None ("auto"): every layer on the GPU when the build sees one, else 0
    n_threads: int = 1
    n_batch: int = 512
    n_parallel: int = 4
    temperature: float = TEMPERATURE
    max_tokens: int = 512
    step_target_ms: int = STEP_TARGET_MS
    verbose: bool = False
    cors_allow_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 10 * 1024 * 1024  # on AWS Lambda: LAMBDA_MAX_BODY_BYTES
    s3_part_size_mb: int = 16
    s3_concurrency: int = 8
    s3_max_attempts: int = 5
    trust_local_models: bool = False
    disk_headroom_mb: int = 64
    snapshot_ready: bool = False  # models loaded without mmap, S3 connections closed on /admin/snapshot/prepare
    model_staging: str = "volume"  # where remote model files are put: the volume, or memory (see store.staging)
    warm_models: tuple[str, ...] = ()
    model_ttl_s: float = 0.0
    max_loaded_models: int = 0
    max_model_memory_mb: int = 0  # host memory the loaded models may take (0: no budget)
    max_gpu_memory_mb: int = 0  # GPU memory they may take, all devices together (0: no budget)
    max_queue: int = DEFAULT_QUEUE.max_waiting
    queue_timeout_s: float = DEFAULT_QUEUE.timeout_s
    drain_timeout_s: float = 30.0
    max_request_s: float = 0.0  # wall-clock cap per generation (0: none)
    kv_cache_dir: Path | None = None  # saved prompt prefixes; None: MODEL_DIR/.kv
    kv_cache_mb: int = 1024  # their budget on the volume (0: off)
    kv_cache_min_tokens: int = 256  # shorter prompts are not saved
    kv_cache_ram_mb: int = 256  # saved states kept in memory too, and conversations leaving their slot (0: off)
    kv_cache_s3: str | None = None  # s3://bucket/prefix/ shared by every instance (None: this volume only)
    kv_cache_key: str | None = attrs.field(default=None, repr=False)  # signs saved prefixes (None: DIR/.key)

    @property
    def prefix_dir(self) -> Path:
        return self.kv_cache_dir or self.model_dir / ".kv"
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, default_threads: int | None = None) -> Settings:
        settings = cls._read_each(environ, default_threads)
        if settings.n_batch < settings.n_parallel:
            # Each decode step holds one token of every sequence: fewer rows than sequences overruns
            # llama.cpp's batch buffer (it aborts the process).
            raise SettingsError(f"N_BATCH={settings.n_batch} must be at least N_PARALLEL={settings.n_parallel}: "
                                "every decode step holds one token of each parallel sequence")
        if settings.kv_cache_s3 and settings.kv_cache_mb and not settings.kv_cache_key:
            # Every instance must sign and check with one key; a random one per volume would make each
            # instance refuse the others' files.
            raise SettingsError("KV_CACHE_S3 needs KV_CACHE_KEY: the secret every instance signs and checks "
                                "the shared prefixes with (at least 32 characters)")
        return settings

    @classmethod
    def _read_each(cls, environ: Mapping[str, str], default_threads: int | None) -> Settings:
        positive: dict[str, Any] = {"check": lambda v: v > 0, "rule": "> 0"}
        d = {field.name: field.default for field in attrs.fields(cls)}  # each default is written once, above
        read = functools.partial(_read, environ)
        return cls(
            model_dir=read("MODEL_DIR", Path, d["model_dir"]),
            manifest_path=read("MODELS_MANIFEST", Path, d["manifest_path"]),
            host=read("HOST", str, d["host"]),
            # Vertex AI names the port in AIP_HTTP_PORT, over an image's PORT
            port=read("AIP_HTTP_PORT", int, read("PORT", int, d["port"], *_PORT_RULE), *_PORT_RULE),
            health_port=read("PORT_HEALTH", int, d["health_port"], *_PORT_RULE),
            vertex_health_route=read("AIP_HEALTH_ROUTE", str, d["vertex_health_route"], *_ROUTE_RULE),
            vertex_predict_route=read("AIP_PREDICT_ROUTE", str, d["vertex_predict_route"], *_ROUTE_RULE),
            n_ctx=read("N_CTX", int, d["n_ctx"], **positive),
            n_gpu_layers=read("N_GPU_LAYERS", _parse_gpu_layers, d["n_gpu_layers"], lambda v: v is None or v >= -1,
                              '"auto", or >= -1 (-1 = all)'),
            n_threads=read("N_THREADS", int, default_threads or physical_cores(), **positive),
            n_batch=read("N_BATCH", int, d["n_batch"], **positive),
            n_parallel=read("N_PARALLEL", int, d["n_parallel"], lambda v: 1 <= v <= 64, "between 1 and 64"),
            temperature=read("TEMPERATURE", float, d["temperature"], lambda v: 0 <= v <= 2, "between 0 and 2"),
            max_tokens=read("MAX_TOKENS", int, d["max_tokens"], **positive),
            step_target_ms=read("STEP_TARGET_MS", int, d["step_target_ms"], **positive),
            verbose=read("VERBOSE", _parse_bool, d["verbose"]),
            cors_allow_origins=read("CORS_ALLOW_ORIGINS", _parse_list, d["cors_allow_origins"]),
            max_body_bytes=read("MAX_BODY_BYTES", int,
                                LAMBDA_MAX_BODY_BYTES if on_lambda(environ) else d["max_body_bytes"], **positive),
            s3_part_size_mb=read("S3_PART_SIZE_MB", int, d["s3_part_size_mb"], lambda v: 5 <= v <= 5120, "5..5120"),
            s3_concurrency=read("S3_CONCURRENCY", int, d["s3_concurrency"], lambda v: 1 <= v <= 64, "1..64"),
            s3_max_attempts=read("S3_MAX_ATTEMPTS", int, d["s3_max_attempts"], lambda v: 1 <= v <= 20, "1..20"),
            trust_local_models=read("TRUST_LOCAL_MODELS", _parse_bool, d["trust_local_models"]),
            disk_headroom_mb=read("DISK_HEADROOM_MB", int, d["disk_headroom_mb"], lambda v: v >= 0, ">= 0"),
            snapshot_ready=read("SNAPSHOT_READY", _parse_bool, d["snapshot_ready"]),
            model_staging=read("MODEL_STAGING", str, d["model_staging"], lambda v: v in ("volume", "memory"),
                               '"volume" or "memory"'),
            warm_models=read("WARM_MODELS", _parse_list, d["warm_models"]),
            model_ttl_s=read("MODEL_TTL_S", float, d["model_ttl_s"], lambda v: v >= 0, ">= 0 (0 = never)"),
            max_loaded_models=read("MAX_LOADED_MODELS", int, d["max_loaded_models"],
                                   lambda v: v >= 0, ">= 0 (0 = no limit)"),
            max_model_memory_mb=read("MAX_MODEL_MEMORY_MB", int, d["max_model_memory_mb"],
                                     lambda v: v >= 0, ">= 0 (0 = no budget)"),
            max_gpu_memory_mb=read("MAX_GPU_MEMORY_MB", int, d["max_gpu_memory_mb"],
                                   lambda v: v >= 0, ">= 0 (0 = no budget)"),
            max_queue=read("MAX_QUEUE", int, d["max_queue"], lambda v: v >= 0, ">= 0"),
            queue_timeout_s=read("QUEUE_TIMEOUT_S", float, d["queue_timeout_s"], **positive),
            drain_timeout_s=read("DRAIN_TIMEOUT_S", float, d["drain_timeout_s"], lambda v: v >= 0, ">= 0"),
            max_request_s=read("MAX_REQUEST_S", float, d["max_request_s"], lambda v: v >= 0, ">= 0 (0 = no cap)"),
            kv_cache_dir=read("KV_CACHE_DIR", Path, d["kv_cache_dir"]),
            kv_cache_mb=read("KV_CACHE_MB", int, d["kv_cache_mb"], lambda v: v >= 0, ">= 0 (0 = off)"),
            kv_cache_min_tokens=read("KV_CACHE_MIN_TOKENS", int, d["kv_cache_min_tokens"], **positive),
            kv_cache_ram_mb=read("KV_CACHE_RAM_MB", int, d["kv_cache_ram_mb"], lambda v: v >= 0, ">= 0 (0 = off)"),
            kv_cache_s3=read("KV_CACHE_S3", _s3_prefix_url, d["kv_cache_s3"]),
            kv_cache_key=read("KV_CACHE_KEY", str, d["kv_cache_key"], lambda v: len(v) >= 32,
                              "at least 32 characters (a random secret)"),
            api_keys=read("API_KEY", _parse_list, d["api_keys"]),
        )
