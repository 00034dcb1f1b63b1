"""One model's options, typed, and the one rule that makes them: the manifest entry's options over
the server environment's defaults (`resolve_options`). Sampling follows the same rule one level up:
the request, then the model, then the server (`handler.engine.types.resolve_sampling`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import llama_cpp

from handler.engine.step_budget import STEP_TARGET_MS, StepRecord
from handler.engine.types import QueueLimits
from handler.store.prefixes import PrefixStore

StepObserverOf = Callable[[str], Callable[[StepRecord], None]]  # a model's name → what records its steps
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


@attrs.frozen
class LlamaDefaults:
    """Process-wide defaults (from Settings) that a manifest entry may override."""

    n_ctx: int
    n_batch: int
    n_threads: int
    n_gpu_layers: int
    verbose: bool
    n_parallel: int
    queue: QueueLimits
    step_target_ms: int
    step_observer: StepObserverOf | None = None  # metrics
    max_request_s: float = 0.0
    prefixes: PrefixStore | None = None  # prompt prefixes saved on the volume (None: off)
    use_mmap: bool = True  # False with SNAPSHOT_READY: the weights live in the process, as a snapshot takes it


@attrs.frozen
class ModelOptions:
    """Everything llama.cpp is told about one model (the manifest's `[models.options]` keys)."""

    n_ctx: int  # per sequence
    n_batch: int
    n_threads: int
    n_gpu_layers: int
    n_parallel: int
    verbose: bool = False
    step_target_ms: int = STEP_TARGET_MS  # how long a decode step may take while streams run
    # A generation still running this long after its request arrived ends as if cut by max_tokens
    # (AWS Lambda bills an invocation to its end even when the client has left). 0: no cap.
    max_request_s: float = 0.0
    n_ubatch: int | None = None
    main_gpu: int = 0
    # None: llama.cpp decides (on where every attention op can run there: the CPU, ~10% faster decoding
    # here, and current GPUs); True forces it on even where the GPU cannot, which moves attention to the CPU.
    flash_attn: bool | None = None
    use_mmap: bool = True
    use_mlock: bool = False
    # llama.cpp's CPU weight repacking computes a row differently depending on how many rows share
    # the batch, so a reply would depend on what else was decoding; off unless asked for (no speed
    # difference measured here on AVX-512, see README "Batching").
    repack: bool = False
    # Sliding-window models (Gemma 3): keep every cell (llama.cpp's default), or only the window, which
    # takes far less memory but means a cached prefix past the window cannot be reused.
    swa_full: bool = True
    # Bit-for-bit reproducible replies whatever the load: each sequence in its own llama_decode, fixed
    # prefill chunks, no cached prefixes (slower: no batching across sequences).
    deterministic: bool = False
    # Greedy sequences sampled in llama.cpp's compute graph (engine.device_sampling); None: when every
    # layer is on a GPU.
    device_sampling: bool | None = None
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    seed: int | None = None  # sampling seed for requests that send none
    pooling: str | None = None  # embedding models; None: the GGUF's own, else mean
    chat_format: str | None = None  # chat models; None: chosen from the GGUF's template
    chat_template: str | None = None  # Jinja text used instead of the GGUF's (the manifest's, file read)

    @property
    def micro_batch(self) -> int:
        return self.n_ubatch or min(self.n_batch, 512)


def resolve_options(defaults: LlamaDefaults, manifest: Mapping[str, Any]) -> ModelOptions:
    """A model's options: the manifest entry's (already checked by the manifest loader), else the
    server environment's, else the built-in defaults of `ModelOptions`."""
    environment = ModelOptions(n_ctx=defaults.n_ctx, n_batch=defaults.n_batch, n_threads=defaults.n_threads,
                               n_gpu_layers=defaults.n_gpu_layers, n_parallel=defaults.n_parallel,
                               verbose=defaults.verbose, step_target_ms=defaults.step_target_ms,
                               max_request_s=defaults.max_request_s, use_mmap=defaults.use_mmap)
    return attrs.evolve(environment, **manifest)


class OptionsError(ValueError):
    """A model's options that llama.cpp cannot run with."""


def check_options(name: str, options: ModelOptions) -> None:
    """Refuse, at start, combinations that crash llama.cpp instead of failing politely."""
    if options.n_batch < options.n_parallel:
        raise OptionsError(f"model '{name}': n_batch={options.n_batch} must be at least "
                           f"n_parallel={options.n_parallel} (set in the manifest's options or by N_BATCH / "
                           "N_PARALLEL): every decode step holds one token of each parallel sequence")


# (use_mmap, use_mlock) → llama.cpp's load mode. llama_model_params has no use_mmap / use_mlock fields any
# more: setting them on the ctypes structure was silently a no-op.
LOAD_MODES = {
    (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,  # read the weights into process memory
    (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
    (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
}


def model_params(options: ModelOptions) -> Any:
    """llama.cpp model parameters (weights placement)."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if options.n_gpu_layers == -1 else options.n_gpu_layers
    params.main_gpu = options.main_gpu
    if not options.use_mmap or options.use_mlock:  # else llama.cpp's own choice (it maps the file)
        params.load_mode = LOAD_MODES[options.use_mmap, options.use_mlock]
    params.use_extra_bufts = options.repack
    return params
