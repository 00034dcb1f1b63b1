"""Loading one model from its file (blocking: the cache calls these off the event loop), and what
it costs in memory, before (estimated) and after (measured)."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs

from handler.engine import llama_log
from handler.engine.batching import BatchingChatModel
from handler.engine.early import EARLY_WEIGHTS
from handler.engine.embedding import EmbeddingModel
from handler.engine.llama_options import LlamaDefaults, resolve_options
from handler.engine.memory import estimate_bytes
from handler.engine.types import Footprint
from handler.errors import ModelLoadFailed
from handler.store.files import RecordBook
from handler.store.manifest import ModelSpec
from handler.store.staging import is_staged

LoadedModel = BatchingChatModel | EmbeddingModel
log = logging.getLogger(__name__)


@attrs.frozen
class Loaded:
    model: LoadedModel
    memory: Footprint  # what llama.cpp reported allocating for it, host and device


def file_identity(spec: ModelSpec, path: Path) -> str:
    """What names the model file's content, the same on every instance that synced it: its sha256 from
    the manifest or from the store's record of the verified file, else (a local file never hashed) its
    name, size and modification time (a changed file is a new model to the saved prompt prefixes)."""
    if spec.sha256:
        return spec.sha256
    if (record := RecordBook().read(path)) is not None:
        return record.sha256
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def load_model(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> Loaded:
    """Load `spec` from `path`; a failure names the model and llama.cpp's own reason."""
    options = resolve_options(defaults, spec.options)
    if is_staged(path) and options.n_gpu_layers != 0:  # the staged host copy goes once weights are on the device
        options = attrs.evolve(options, use_mmap=False)
    llama_log.take_messages(), llama_log.take_buffers()  # whatever an earlier load on this thread left
    early = EARLY_WEIGHTS.take(path, options)  # the store has verified `path` by now
    if early is not None:
        log.info("model %s: adopted the weights read while the process started", spec.name)
    try:
        if spec.kind == "embedding":
            model: LoadedModel = EmbeddingModel(spec.name, path, options, defaults.queue, early=early)
        else:
            observer = defaults.step_observer
            model = BatchingChatModel(spec.name, path, options, defaults.queue,
                                      on_step=observer(spec.name) if observer else None,
                                      prefixes=defaults.prefixes, identity=file_identity(spec, path), early=early)
    except (ValueError, RuntimeError, OSError) as exc:
        if early is not None:
            early.close()
        cause = "; ".join(llama_log.take_messages()[-3:]) or str(exc)
        raise ModelLoadFailed(f"model '{spec.name}' failed to load from {path.name}: {cause}") from exc
    return Loaded(model, llama_log.take_buffers() + (early.buffers if early is not None else Footprint()))


def estimate_model_bytes(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> Footprint:
    """What `spec` would take once loaded from `path`, host and device."""
    try:
        return estimate_bytes(path, resolve_options(defaults, spec.options), spec.kind)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadFailed(f"model '{spec.name}': {path.name} could not be read as a GGUF file") from exc
