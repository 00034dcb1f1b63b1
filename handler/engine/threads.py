"""A persistent CPU thread pool for one llama.cpp context.

Without one, ggml creates a disposable pool for every graph it computes: each `llama_decode` starts and
joins its worker threads again (here about 0.8 ms a call: on a tiny model, most of a decode step).
llama.cpp's own tools attach a persistent pool the same way. llama-cpp-python binds none of this,
so the few functions are read from the libraries its libllama loads."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import llama_cpp

MAX_THREADS = 512  # GGML_MAX_N_THREADS


class _PoolParams(ctypes.Structure):
    _fields_ = [("cpumask", ctypes.c_bool * MAX_THREADS), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


@functools.cache
def _libraries() -> tuple[Any, Any, Any] | None:
    folder = Path(llama_cpp.__file__).parent / "lib"
    try:
        base, cpu = ctypes.CDLL(str(folder / "libggml-base.so")), ctypes.CDLL(str(folder / "libggml-cpu.so"))
    except OSError:  # a build laid out differently: ggml's disposable pools, as before
        return None
    base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_PoolParams), ctypes.c_int]
    base.ggml_threadpool_params_init.restype = None
    cpu.ggml_threadpool_new.argtypes, cpu.ggml_threadpool_new.restype = [ctypes.POINTER(_PoolParams)], ctypes.c_void_p
    cpu.ggml_threadpool_free.argtypes, cpu.ggml_threadpool_free.restype = [ctypes.c_void_p], None
    attach = llama_cpp.llama_cpp._lib.llama_attach_threadpool
    attach.argtypes, attach.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None
    return base, cpu, attach


class CpuThreadPool:
    """`n_threads` threads kept for the context's life (the caller's thread is one of them). `poll` is
    ggml's busy-wait level between tasks: 0 sleeps at once, so the idle worker leaves the cores to the
    host's own work between steps."""

    def __init__(self, n_threads: int, poll: int = 0) -> None:
        self._pool: int | None = None
        libraries = _libraries()
        if libraries is None:
            return
        base, self._cpu, self._attach = libraries
        params = _PoolParams()
        base.ggml_threadpool_params_init(ctypes.byref(params), n_threads)
        params.poll = poll
        self._pool = self._cpu.ggml_threadpool_new(ctypes.byref(params)) or None

    def attach(self, context: Any) -> None:
        if self._pool is not None:
            self._attach(context, self._pool, self._pool)

    def free(self) -> None:
        """After the context that uses it is freed."""
        if self._pool is not None:
            self._cpu.ggml_threadpool_free(self._pool)
            self._pool = None
