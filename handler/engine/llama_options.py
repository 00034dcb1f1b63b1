"""llama.cpp constructor options for one model: environment defaults overlaid with the manifest's."""

from __future__ import annotations

from typing import Any

import attrs

from handler.engine.worker import QueueLimits

POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


@attrs.frozen
class LlamaDefaults:
    """Process-wide defaults (from Settings) that a manifest entry may override."""

    n_ctx: int = 2048
    n_batch: int = 512
    n_threads: int = 1
    n_gpu_layers: int = 0
    verbose: bool = False
    n_parallel: int = 4
    queue: QueueLimits = QueueLimits()


def chat_options(defaults: LlamaDefaults, options: dict[str, Any]) -> dict[str, Any]:
    """Options of a batching chat model: the environment's defaults overlaid with the manifest's."""
    merged: dict[str, Any] = {
        "n_ctx": defaults.n_ctx, "n_batch": defaults.n_batch, "n_threads": defaults.n_threads,
        "n_gpu_layers": defaults.n_gpu_layers, "verbose": defaults.verbose, "n_parallel": defaults.n_parallel,
    }
    merged.update({key: value for key, value in options.items() if key not in ("chat_format", "pooling")})
    return merged


def llama_kwargs(defaults: LlamaDefaults, options: dict[str, Any], *, embedding: bool) -> dict[str, Any]:
    """Keyword arguments for `llama_cpp.Llama` (without model_path and pooling)."""
    merged: dict[str, Any] = {
        "n_ctx": defaults.n_ctx, "n_batch": defaults.n_batch, "n_threads": defaults.n_threads,
        "n_gpu_layers": defaults.n_gpu_layers, "verbose": defaults.verbose,
    }
    ignored = ("chat_format", "pooling", "n_parallel")
    merged.update({key: value for key, value in options.items() if key not in ignored})
    merged["n_threads_batch"] = merged["n_threads"]
    if embedding:
        # A pooled embedding needs the whole input in one micro-batch.
        merged["n_ubatch"] = merged["n_batch"] = min(merged["n_batch"], merged["n_ctx"])
    # Our own renderers build prompts; naming a format stops llama-cpp-python guessing one from the GGUF.
    merged["chat_format"] = "chatml"
    merged["embedding"] = embedding
    return merged
