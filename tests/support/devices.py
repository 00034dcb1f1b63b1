"""Where the tests put a model's layers: on the GPU when the installed llama.cpp has a GPU backend and
sees a GPU (then the engine and API suites run offloaded), else on the CPU (CI)."""

from __future__ import annotations

import pytest

from handler.engine.devices import ALL_LAYERS, has_gpu

GPU_LAYERS = ALL_LAYERS if has_gpu() else 0
needs_gpu = pytest.mark.skipif(not has_gpu(), reason="this llama.cpp build has no GPU backend or sees no GPU: "
                                                     "install one built with CUDA (just test runs on the CPU)")
# Replies that do not depend on what else shares a batch are promised on the CPU only (README "What is
# reproducible, exactly"): llama.cpp's GPU kernels change with a batch's rows.
batch_invariant_on_cpu_only = pytest.mark.skipif(
    GPU_LAYERS != 0, reason="replies equal alone and batched are promised on the CPU only: llama.cpp's GPU "
                            "kernels change with a batch's rows")
