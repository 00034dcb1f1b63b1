"""How llama.cpp runs its CPU threads: ggml's own pool per context, not OpenMP (see engine.threads)."""

from __future__ import annotations

from handler.engine.threads import built_with_openmp


def test_the_installed_llama_cpp_runs_on_ggml_pools_not_openmp():
    """With OpenMP, a second model used in the process (the default manifest's embedding model) made
    libgomp stop spinning for every team, and chat decoding on 2 cores halved for good."""
    assert not built_with_openmp()


def test_openmp_is_read_from_the_system_info():
    assert built_with_openmp("CPU : AVX2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |")
    assert not built_with_openmp("CPU : AVX2 = 1 | LLAMAFILE = 1 | REPACK = 1 |")
