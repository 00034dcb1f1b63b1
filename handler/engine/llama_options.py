"""llama.cpp options for one model: environment defaults overlaid with the manifest's."""

from __future__ import annotations

from typing import Any

import attrs
import llama_cpp

from handler.engine.types import DEFAULT_QUEUE, QueueLimits

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
    queue: QueueLimits = DEFAULT_QUEUE


def engine_options(defaults: LlamaDefaults, options: dict[str, Any]) -> dict[str, Any]:
    """A model's llama.cpp options: the environment's defaults overlaid with the manifest's."""
    merged: dict[str, Any] = {
        "n_ctx": defaults.n_ctx, "n_batch": defaults.n_batch, "n_threads": defaults.n_threads,
        "n_gpu_layers": defaults.n_gpu_layers, "verbose": defaults.verbose, "n_parallel": defaults.n_parallel,
    }
    merged.update({key: value for key, value in options.items() if key not in ("chat_format", "pooling")})
    return merged


class OptionsError(ValueError):
    """A model's merged options that llama.cpp cannot run with."""


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse, at start, combinations that crash llama.cpp instead of failing politely."""
    if options["n_batch"] < options["n_parallel"]:
        raise OptionsError(f"model '{name}': n_batch={options['n_batch']} must be at least "
                           f"n_parallel={options['n_parallel']} (set in the manifest's options or by N_BATCH / "
                           "N_PARALLEL): every decode step holds one token of each parallel sequence")


def model_params(options: dict[str, Any]) -> Any:
    """llama.cpp model parameters (weights placement) from merged options."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if options["n_gpu_layers"] == -1 else options["n_gpu_layers"]
    params.main_gpu = options.get("main_gpu", 0)
    params.use_mmap = options.get("use_mmap", True)
    params.use_mlock = options.get("use_mlock", False)
    return params
