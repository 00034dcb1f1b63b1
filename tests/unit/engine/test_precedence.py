"""The one precedence rule, as a table: the request's value, then the model's (its manifest entry),
then the server environment's, then the built-in default."""

import pytest

from handler.engine.llama_options import LlamaDefaults, ModelOptions, resolve_options
from handler.engine.types import (
    MIN_P,
    TOP_K,
    TOP_P,
    QueueLimits,
    SamplingRequest,
    ServerSampling,
    resolve_sampling,
)

SERVER = ServerSampling(temperature=0.3, max_tokens=64)


@pytest.mark.parametrize(("request_values", "model_seed", "field", "expected"), [
    ({}, None, "temperature", 0.3),  # the server's TEMPERATURE
    ({"temperature": 0.0}, None, "temperature", 0.0),  # the request's, even when falsy
    ({}, None, "max_tokens", 64),  # the server's MAX_TOKENS
    ({"max_tokens": 5}, None, "max_tokens", 5),
    ({}, None, "top_p", TOP_P),  # built-in (OpenAI's 1.0)
    ({"top_p": 0.5}, None, "top_p", 0.5),
    ({}, None, "top_k", TOP_K),
    ({}, None, "min_p", MIN_P),
    ({"min_p": 0.0}, None, "min_p", 0.0),
    ({}, None, "seed", None),  # no seed anywhere: random
    ({}, 7, "seed", 7),  # the model's manifest seed
    ({"seed": 3}, 7, "seed", 3),  # the request's beats the model's
])
def test_sampling_precedence(request_values, model_seed, field, expected):
    params = resolve_sampling(SamplingRequest(**request_values), model_seed=model_seed, server=SERVER)
    assert getattr(params, field) == expected


ENVIRONMENT = LlamaDefaults(n_ctx=2048, n_batch=512, n_threads=2, n_gpu_layers=0, verbose=False, n_parallel=4,
                            queue=QueueLimits(), step_target_ms=120)


@pytest.mark.parametrize(("manifest", "field", "expected"), [
    ({}, "n_ctx", 2048),  # the environment's N_CTX
    ({"n_ctx": 4096}, "n_ctx", 4096),  # the manifest's
    ({}, "n_parallel", 4),
    ({"n_parallel": 1}, "n_parallel", 1),
    ({}, "flash_attn", None),  # built-in: llama.cpp decides (auto)
    ({"flash_attn": False}, "flash_attn", False),
    ({}, "micro_batch", 512),  # min(n_batch, 512)
    ({"n_batch": 128}, "micro_batch", 128),
    ({"n_ubatch": 64}, "micro_batch", 64),
    ({"chat_format": "gguf"}, "chat_format", "gguf"),
    ({}, "step_target_ms", 120),  # the environment's STEP_TARGET_MS
])
def test_model_option_precedence(manifest, field, expected):
    assert getattr(resolve_options(ENVIRONMENT, manifest), field) == expected


def test_options_are_typed():
    assert isinstance(resolve_options(ENVIRONMENT, {}), ModelOptions)
    with pytest.raises(TypeError):
        resolve_options(ENVIRONMENT, {"not_an_option": 1})
