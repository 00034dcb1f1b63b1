"""Building the long-lived objects from settings, shared by the app's lifespan and the CLI."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from handler.engine import devices, threads
from handler.engine.cache import CacheLimits, Loader, ModelCache
from handler.engine.early import EARLY_WEIGHTS, Weights, load_weights
from handler.engine.llama_options import (
    LlamaDefaults,
    ModelOptions,
    StepObserverOf,
    check_options,
    resolve_options,
)
from handler.engine.loading import load_model
from handler.engine.types import Footprint, QueueLimits
from handler.settings import Settings
from handler.store.catalog import ModelCatalog, check_distinct_paths
from handler.store.manifest import ModelSpec, load_manifest
from handler.store.model_store import ModelStore, StoreConfig
from handler.store.prefix_mirror import S3PrefixMirror
from handler.store.prefixes import PrefixStore, load_key
from handler.store.s3 import S3Tuning

log = logging.getLogger(__name__)


def build_catalog(settings: Settings, declared: tuple[ModelSpec, ...]) -> ModelCatalog:
    return ModelCatalog(model_dir=settings.model_dir, declared=declared)


def s3_tuning(settings: Settings) -> S3Tuning:
    return S3Tuning(part_size_mb=settings.s3_part_size_mb, concurrency=settings.s3_concurrency,
                    max_attempts=settings.s3_max_attempts)


def build_store(settings: Settings, catalog: ModelCatalog) -> ModelStore:
    return ModelStore(catalog, StoreConfig(tuning=s3_tuning(settings), trust_local=settings.trust_local_models,
                                           headroom_bytes=settings.disk_headroom_mb * 1024 * 1024,
                                           staging=settings.model_staging))


def build_prefix_store(settings: Settings) -> PrefixStore | None:
    """Where prompt prefixes' KV state is kept across processes (None when KV_CACHE_MB is 0)."""
    if settings.kv_cache_mb == 0:
        return None
    mirror = None if settings.kv_cache_s3 is None else S3PrefixMirror(settings.kv_cache_s3, s3_tuning(settings))
    try:
        key = load_key(settings.prefix_dir, settings.kv_cache_key)
    except (OSError, ValueError) as exc:  # a read-only volume, or a damaged key file: nothing can be saved safely
        log.warning("saved prompt prefixes are off: no signing key (%s); set KV_CACHE_KEY", exc)
        return None
    return PrefixStore(settings.prefix_dir, settings.kv_cache_mb * 1024 * 1024, settings.kv_cache_min_tokens,
                       key=key, mirror=mirror, ram_bytes=settings.kv_cache_ram_mb * 1024 * 1024)


def llama_defaults(settings: Settings, step_observer: StepObserverOf | None = None,
                   prefixes: PrefixStore | None = None) -> LlamaDefaults:
    return LlamaDefaults(n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_threads=settings.n_threads,
                         n_gpu_layers=gpu_layers(settings),
                         verbose=settings.verbose, n_parallel=settings.n_parallel,
                         queue=QueueLimits(max_waiting=settings.max_queue, timeout_s=settings.queue_timeout_s),
                         step_target_ms=settings.step_target_ms, step_observer=step_observer,
                         max_request_s=settings.max_request_s, prefixes=prefixes,
                         use_mmap=not settings.snapshot_ready)


def gpu_layers(settings: Settings) -> int:
    """N_GPU_LAYERS, or (auto) every layer when llama.cpp sees a GPU and none otherwise."""
    return devices.default_gpu_layers() if settings.n_gpu_layers is None else settings.n_gpu_layers


def describe_devices(settings: Settings) -> str:
    """The devices llama.cpp sees and where layers go, for the start log."""
    names = ", ".join(f"{device.name} ({device.kind}, {device.description})" for device in devices.devices())
    layers = gpu_layers(settings)
    where = "all" if layers == -1 else str(layers)
    how = "auto" if settings.n_gpu_layers is None else "N_GPU_LAYERS"
    pools = ("OpenMP (CPU decoding slows once a second model is used: build llama-cpp-python with "
             "-DGGML_OPENMP=OFF)" if threads.built_with_openmp() else "ggml's, one per model")
    return f"devices: {names or 'unknown'}; GPU layers: {where} ({how}); CPU thread pools: {pools}"


def load_checked_manifest(settings: Settings) -> tuple[ModelSpec, ...]:
    """The manifest, read once at start so that a mistake fails the start, not a model's first
    request: it parses, its entries' local files are distinct, and every chat model's options (the
    manifest's over the environment's) are ones llama.cpp can run with."""
    declared = tuple(load_manifest(settings.manifest_path))
    check_distinct_paths(settings.model_dir, declared)
    defaults = llama_defaults(settings)
    for spec in declared:
        if spec.kind == "chat":
            check_options(spec.name, resolve_options(defaults, spec.options))
    return declared


def build_cache(settings: Settings, store: ModelStore, loader: Loader = load_model,
                step_observer: StepObserverOf | None = None, prefixes: PrefixStore | None = None) -> ModelCache:
    defaults = llama_defaults(settings, step_observer, prefixes)
    limits = CacheLimits(max_loaded=settings.max_loaded_models,
                         memory_budget=Footprint(host=settings.max_model_memory_mb * 1024 * 1024,
                                                 device=settings.max_gpu_memory_mb * 1024 * 1024),
                         default_ttl_s=settings.model_ttl_s)
    return ModelCache(fetch=store.ensure_local, defaults=defaults, limits=limits, discard=store.discard_if_corrupt,
                      loader=loader, loaded=store.release_staged)


def warm_set(settings: Settings, catalog: ModelCatalog) -> list[ModelSpec]:
    """Models marked `warm = true` in the manifest, then those named in WARM_MODELS (unknown names fail)."""
    names = [spec.name for spec in catalog.declared if spec.warm]
    names += [name for name in settings.warm_models if name not in names]
    return [catalog.get(name) for name in names]


def start_early_weights(settings: Settings) -> Path | None:
    """Start reading the warm set's first model's weights now, on a thread of their own (see
    `engine.early`); returns the path they are read from, when known now. A file on the volume is read
    at once; a remote model's sync (its check, or its download) starts too, by the store the app then
    takes over (`take_early_store`), so the check is done by the time the app is, and a model that must
    be downloaded first (not on the volume yet, or staged in memory) is read as soon as that sync has
    verified it. The cache adopts what was read only once the store has verified the file. Only the first
    model: more could exceed a memory budget that the cache, which adopts them, has not applied yet."""
    declared = load_checked_manifest(settings)
    catalog = build_catalog(settings, declared)
    first = warm_set(settings, catalog)[:1]
    if not first:
        return None
    spec, path = first[0], catalog.path_of(first[0])
    options = resolve_options(llama_defaults(settings), spec.options)
    load = functools.partial(load_weights, options=options, chat=spec.kind == "chat")
    on_volume = (not spec.is_remote or settings.model_staging == "volume") and path.is_file()
    if on_volume:
        EARLY_WEIGHTS.start(path, options, load)
    if not spec.is_remote:
        return path
    store = build_store(settings, catalog)
    _EARLY_STORES.append((settings, declared, store))
    if not on_volume:
        # The S3 client first, on this thread: its making is Python that the download waits for, and
        # beside the framework's imports it would get half the GIL; made first, the bytes then flow
        # (the network and disk, without the GIL) while the framework imports.
        store.connect()
    store.prefetch(spec).add_done_callback(functools.partial(_read_when_synced, options, load))
    return path if on_volume else None


def _read_when_synced(options: ModelOptions, load: Callable[[Path], Weights], synced: Future[Path]) -> None:
    """Once the store has synced and verified the file (on its thread), llama.cpp starts reading it
    (unless it is reading that path already)."""
    if synced.exception() is None:
        EARLY_WEIGHTS.start(synced.result(), options, load)


# The store a process's start began syncing with (at most one), until the app's lifespan takes it.
_EARLY_STORES: list[tuple[Settings, tuple[ModelSpec, ...], ModelStore]] = []


def take_early_store(settings: Settings, declared: tuple[ModelSpec, ...]) -> ModelStore | None:
    """The store `start_early_weights` began a sync with, if it was built from these very settings and
    manifest entries (its sync then counts: `ensure_local` joins it); any other is closed."""
    taken = None
    while _EARLY_STORES:
        early_settings, early_declared, store = _EARLY_STORES.pop()
        if taken is None and early_settings == settings and early_declared == declared:
            taken = store
        else:
            store.close()
    return taken
