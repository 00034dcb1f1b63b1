"""The embedding engine in-process with the real demo model: batching into few decodes, and vectors
that do not depend on what they were batched with."""

from __future__ import annotations

import asyncio
import math

import pytest

from handler.engine.embedding import SEQUENCES_PER_DECODE, EmbeddingModel
from handler.engine.llama_options import ModelOptions
from tests.support.devices import GPU_LAYERS

TEXTS = [f"short text number {n} about the sea" for n in range(64)]


@pytest.fixture(scope="module")
def model(demo_model_path):
    options = ModelOptions(n_ctx=2048, n_batch=512, n_threads=2, n_gpu_layers=GPU_LAYERS, n_parallel=1)
    loaded = EmbeddingModel("embed", demo_model_path, options)
    yield loaded
    loaded.close()


def test_many_inputs_take_few_decodes(model):
    inputs = [model.tokenize(text) for text in TEXTS]
    before = model.decodes
    vectors = asyncio.run(model.embed(inputs))
    assert len(vectors) == 64 and all(len(vector) == model.dimensions for vector in vectors)
    assert model.decodes - before == math.ceil(64 / SEQUENCES_PER_DECODE)
    assert all(math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4) for vector in vectors)


def test_concurrent_requests_share_decodes_and_vectors_do_not_depend_on_batching(model):
    inputs = [model.tokenize(text) for text in TEXTS[:8]]
    alone = [asyncio.run(model.embed([tokens]))[0] for tokens in inputs]

    async def together():
        return await asyncio.gather(*(model.embed([tokens]) for tokens in inputs))

    before = model.decodes
    batched = [result[0] for result in asyncio.run(together())]
    assert model.decodes - before < len(inputs)
    for solo, shared in zip(alone, batched, strict=True):
        assert shared == pytest.approx(solo, abs=1e-6)
