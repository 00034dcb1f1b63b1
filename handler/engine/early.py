"""A model loaded while the process is still starting: the warm set's first model is read by llama.cpp
(in C, without the GIL), and a chat model's context (its KV cache, compute buffers) made, while Python
imports the web framework and builds the app, instead of after. The cache adopts them only for the
same file, unchanged since it was read, with the same options, and only after the store has verified
that file; anything else is freed and loaded the usual way.

llama_cpp is imported inside the loading thread, never at this module's import: `handler.serve`
imports this before anything heavy."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # nothing heavy at import: see the module's note
    from handler.engine.types import Footprint

log = logging.getLogger(__name__)

# The GIL's switch interval while an early load runs. llama.cpp logs some 2,300 lines while it loads a
# model, each through a Python callback that must take the GIL from the main thread, which is busy
# importing the framework: at Python's 5 ms default the load took 522 ms instead of ~300 alone and the
# first token came at 988–1,429 ms; at 0.2 ms, 433–514 ms and 859–938 ms (three rounds each).
EARLY_SWITCH_INTERVAL_S = 0.0002


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file at `path` is replaced or rewritten (None: no such file)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


@attrs.frozen
class Weights:
    model: Any  # llama_cpp's LlamaModel
    context: Any  # its LlamaContext (chat models), or None
    buffers: Footprint  # what llama.cpp reported allocating for them (on the loading thread)

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
        self.model.close()


@attrs.define(eq=False)
class _Load:
    path: Path
    options: Any  # the model's resolved options (ModelOptions): the same are needed to adopt it
    signature: tuple[int, int, int, int] | None
    done: threading.Event = attrs.field(factory=threading.Event)
    weights: Weights | None = None  # once loaded
    error: BaseException | None = None


class EarlyWeights:
    """The weights being (or already) loaded early, by file: each taken at most once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loads: dict[Path, _Load] = {}

    def start(self, path: Path, options: Any, load: Callable[[Path], Weights]) -> None:
        """Load `path` with `load` on a thread of its own (a daemon: a start that fails loses nothing)."""
        entry = _Load(path, options, file_signature(path))
        with self._lock:
            if path in self._loads or entry.signature is None:
                return
            self._loads[path] = entry
        threading.Thread(target=self._run, args=(entry, load), name="early-weights", daemon=True).start()

    @staticmethod
    def _run(entry: _Load, load: Callable[[Path], Weights]) -> None:
        default_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(default_interval, EARLY_SWITCH_INTERVAL_S))
        try:
            entry.weights = load(entry.path)
        except BaseException as exc:  # noqa: BLE001 - the usual load reports it, with its own message
            entry.error = exc
        finally:
            sys.setswitchinterval(default_interval)
            entry.done.set()

    def take(self, path: Path, options: Any) -> Weights | None:
        """What was loaded early from `path` with `options`, if the file is still the one it was read
        from (blocking until the load ends); else None, and whatever was loaded is freed."""
        with self._lock:
            entry = self._loads.pop(path, None)
        if entry is None:
            return None
        entry.done.wait()
        if entry.weights is not None and entry.options == options and entry.signature == file_signature(path):
            return entry.weights
        if entry.weights is not None:
            log.info("the early load of %s is not used: the file or its options changed since", path.name)
            entry.weights.close()
        return None

    def release(self) -> list[Path]:
        """Free the weights nobody took (the warm set is loaded: they are not the file it uses now)."""
        with self._lock:
            left, self._loads = list(self._loads.values()), {}
        for entry in left:
            entry.done.wait()
            if entry.weights is not None:
                entry.weights.close()
        return [entry.path for entry in left]


EARLY_WEIGHTS = EarlyWeights()  # process-wide, as the model cache is


def load_weights(path: Path, options: Any, *, chat: bool) -> Weights:
    """llama.cpp's weights for `path` placed as `options` says, and a chat model's context."""
    from llama_cpp._internals import LlamaContext
    from llama_cpp._logger import set_verbose

    from handler.engine import llama_log
    from handler.engine.batching import context_params
    from handler.engine.llama_options import model_params

    set_verbose(options.verbose)
    llama_log.take_buffers()
    model = llama_log.open_model(str(path), model_params(options))
    try:
        context = LlamaContext(model=model, params=context_params(options), verbose=options.verbose) if chat else None
    except BaseException:
        model.close()
        raise
    return Weights(model, context, llama_log.take_buffers())
