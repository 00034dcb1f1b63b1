"""What the engine sets on llama.cpp's parameter structures must be fields of them: ctypes takes any
other attribute silently (this is how `use_mmap` stopped doing anything when llama.cpp replaced it
with `load_mode`)."""

from __future__ import annotations

import llama_cpp
import pytest

from handler.engine.batching import context_params
from handler.engine.llama_options import ModelOptions, model_params


def _options(**overrides):
    return ModelOptions(**{"n_ctx": 512, "n_batch": 512, "n_threads": 2, "n_gpu_layers": 0, "n_parallel": 2,
                           **overrides})


@pytest.mark.parametrize("use_mmap", [True, False])
@pytest.mark.parametrize("use_mlock", [True, False])
def test_model_params_set_only_real_fields(use_mmap, use_mlock):
    params = model_params(_options(use_mmap=use_mmap, use_mlock=use_mlock, repack=True, main_gpu=0))
    assert vars(params) == {}


@pytest.mark.parametrize(("use_mmap", "use_mlock", "mode"), [
    (False, False, llama_cpp.LLAMA_LOAD_MODE_NONE),
    (False, True, llama_cpp.LLAMA_LOAD_MODE_MLOCK),
    (True, True, llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK),
    (True, False, llama_cpp.llama_model_default_params().load_mode),
])
def test_use_mmap_and_use_mlock_choose_the_load_mode(use_mmap, use_mlock, mode):
    assert model_params(_options(use_mmap=use_mmap, use_mlock=use_mlock)).load_mode == mode


def test_context_params_set_only_real_fields():
    params = context_params(_options(rope_freq_base=10000.0, rope_freq_scale=1.0, swa_full=True))
    assert vars(params) == {}
