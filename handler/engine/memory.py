"""What a model costs in memory: estimated before it loads, from its GGUF header and its options;
measured after, from the buffers llama.cpp reports allocating (weights, KV cache, outputs, compute).

The estimate is deliberately simple and errs high: the tensor bytes the header declares, an f16 KV
cache for every cell the engine will allocate (`n_ctx × n_parallel` for chat, the embedding engine's
packed sequences otherwise), and a compute buffer of one micro-batch of logits plus activations. With
layers on a GPU it is split as llama.cpp places them: each offloaded layer's share of the weights and
of the KV cache, and the activations, on the device; the rest, and the logits, on the host.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp

from handler.engine import devices, llama_log
from handler.engine.embedding import SEQUENCES_PER_DECODE
from handler.engine.llama_options import ModelOptions
from handler.engine.types import Footprint
from handler.store.manifest import ModelKind

F16_BYTES, F32_BYTES = 2, 4
ACTIVATION_WIDTHS = 16  # compute buffer: per micro-batch token, the logits and ~16 hidden-state widths


def kv_cells(options: ModelOptions, kind: ModelKind) -> int:
    """KV cells the engine allocates for these options (as `batching` and `embedding` size them)."""
    if kind == "chat":
        return options.n_ctx * options.n_parallel
    return min(options.n_batch, options.n_ctx) * SEQUENCES_PER_DECODE


def micro_batch(options: ModelOptions, kind: ModelKind) -> int:
    return options.micro_batch if kind == "chat" else min(options.n_batch, options.n_ctx)


def estimate_bytes(path: Path, options: ModelOptions, kind: ModelKind) -> Footprint:
    """What `path` will take once loaded with `options`, on the host and on a GPU (blocking: reads the
    header and vocabulary)."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_log.open_model(str(path), params)
    try:
        metadata, weights, vocabulary = model.metadata(), llama_cpp.llama_model_size(model.model), model.n_vocab()
    finally:
        model.close()
    kv_cache = kv_cells(options, kind) * kv_bytes_per_token(metadata)
    logits = micro_batch(options, kind) * vocabulary * F32_BYTES  # read by the host: always in host memory
    activations = micro_batch(options, kind) * ACTIVATION_WIDTHS * _number(metadata, "embedding_length", 0) * F32_BYTES
    layers = _number(metadata, "block_count", 0)
    weights_share, kv_share = device_shares(options.n_gpu_layers if devices.has_gpu() else 0, layers)
    device = round(weights * weights_share) + round(kv_cache * kv_share) + (activations if weights_share else 0)
    return Footprint(host=weights + kv_cache + logits + activations - device, device=device)


def device_shares(gpu_layers: int, layers: int) -> tuple[float, float]:
    """The shares of the weights and of the KV cache llama.cpp puts on a GPU with `gpu_layers` offloaded
    (-1: all): the repeating layers first, then the output layer (counted as one more)."""
    if gpu_layers == 0 or layers <= 0:
        return 0.0, 0.0
    offloaded = layers + 1 if gpu_layers < 0 else min(gpu_layers, layers + 1)
    return offloaded / (layers + 1), min(offloaded, layers) / layers


def _number(metadata: dict[str, str], key: str, default: int) -> int:
    arch = metadata.get("general.architecture", "")
    return int(float(metadata.get(f"{arch}.{key}", default)))


def kv_bytes_per_token(metadata: dict[str, str]) -> int:
    """What one token's f16 K and V cells take across every layer, from the GGUF header's shapes."""
    width = _number(metadata, "embedding_length", 0)
    heads = max(1, _number(metadata, "attention.head_count", 1))
    per_layer = _number(metadata, "attention.head_count_kv", heads) * (
        _number(metadata, "attention.key_length", width // heads) + _number(metadata, "attention.value_length",
                                                                            width // heads))
    return _number(metadata, "block_count", 0) * per_layer * F16_BYTES
