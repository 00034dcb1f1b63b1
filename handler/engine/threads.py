"""A persistent CPU thread pool for one llama.cpp context, attached the way llama.cpp's own tools do.

llama.cpp is built without OpenMP here (pyproject.toml), so ggml runs graphs on its own pools; without
one attached, it would start and join threads on every `llama_decode`. Each context keeps its own
(a repacked model's does not: `pool_wanted`): its workers spin at the barriers inside a graph and
sleep between graphs (`poll = 0`), so an idle model takes no core and the host's own work between
steps (sampler chains) has the second one. With OpenMP
instead, each model's scheduler thread had a team of its own, and once the process held more OpenMP
threads than cores (a second model used), libgomp stopped spinning for every team: chat decoding
halved here. llama-cpp-python binds none of this, so the few functions are read from the libraries
its libllama loads."""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import llama_cpp

from handler.engine.devices import ggml_library

MAX_THREADS = 512  # GGML_MAX_N_THREADS


class _PoolParams(ctypes.Structure):
    _fields_ = [("cpumask", ctypes.c_bool * MAX_THREADS), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


@functools.cache
def _libraries() -> tuple[Any, Any, Any] | None:
    base, cpu = ggml_library("libggml-base.so"), ggml_library("libggml-cpu.so")
    if base is None or cpu is None:  # a build laid out differently: ggml's disposable pools, as before
        return None
    base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_PoolParams), ctypes.c_int]
    base.ggml_threadpool_params_init.restype = None
    cpu.ggml_threadpool_new.argtypes, cpu.ggml_threadpool_new.restype = [ctypes.POINTER(_PoolParams)], ctypes.c_void_p
    cpu.ggml_threadpool_free.argtypes, cpu.ggml_threadpool_free.restype = [ctypes.c_void_p], None
    attach = llama_cpp.llama_cpp._lib.llama_attach_threadpool
    attach.argtypes, attach.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None
    return base, cpu, attach


def built_with_openmp(system_info: str | None = None) -> bool:
    """Whether llama.cpp's CPU backend runs its graphs on OpenMP (its system info says `OPENMP = 1`)."""
    info = llama_cpp.llama_print_system_info().decode(errors="replace") if system_info is None else system_info
    return "OPENMP = 1" in info


def pool_wanted(repacked: bool) -> bool:
    """Whether a context keeps a pool. Not when its weights are repacked for the CPU (`repack`): this
    llama.cpp's repacked Q4_0 matmuls ran at about half speed with a pool attached (random-weight Qwen3
    shapes, 2 threads, any `poll`; one-token decode with the pool against without: 0.6B 53–59 against
    30–31 ms, 4B 364–588 against 193–207 ms; prompts ~1.6× slower), as if one thread did the work;
    without repacking, the same contexts ran as fast with the pool as without it. A repacked model gets
    ggml's threads per decode."""
    return not repacked


class CpuThreadPool:
    """`n_threads` threads kept for the context's life (the caller's thread is one of them). `poll` is
    ggml's busy-wait level between tasks: 0 sleeps at once, so the idle worker leaves the cores to the
    host's own work between steps. `enabled=False`: none (ggml starts its threads at every decode)."""

    def __init__(self, n_threads: int, poll: int = 0, *, enabled: bool = True) -> None:
        self._pool: int | None = None
        libraries = _libraries()
        if libraries is None or not enabled:
            return
        base, self._cpu, self._attach = libraries
        params = _PoolParams()
        base.ggml_threadpool_params_init(ctypes.byref(params), n_threads)
        params.poll = poll
        self._pool = self._cpu.ggml_threadpool_new(ctypes.byref(params)) or None

    @property
    def kept(self) -> bool:
        """Whether there is a pool (attached once `attach` ran)."""
        return self._pool is not None

    def attach(self, context: Any) -> None:
        if self._pool is not None:
            self._attach(context, self._pool, self._pool)

    def free(self) -> None:
        """After the context that uses it is freed."""
        if self._pool is not None:
            self._cpu.ggml_threadpool_free(self._pool)
            self._pool = None
