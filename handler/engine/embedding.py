"""Embedding models: one `Llama` in embedding mode, pooled vectors, L2-normalised as OpenAI's are."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import llama_cpp

from handler.engine.gguf_metadata import read_metadata_values
from handler.engine.llama_options import POOLING_TYPES
from handler.engine.worker import ModelWorker, QueueLimits
from handler.errors import ContextLengthExceeded, InvalidRequest


def choose_pooling(path: Path, requested: str | None) -> int:
    """The manifest's pooling, else the GGUF's own, else mean (causal LMs declare none)."""
    if requested is not None:
        return POOLING_TYPES[requested]
    declared = read_metadata_values(path, ["{arch}.pooling_type"])
    return llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if declared else llama_cpp.LLAMA_POOLING_TYPE_MEAN


def normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


class EmbeddingModel:
    def __init__(self, name: str, path: Path, kwargs: dict[str, Any], pooling: str | None,
                 queue: QueueLimits = QueueLimits()) -> None:
        self.name = name
        self.llama = llama_cpp.Llama(model_path=str(path), pooling_type=choose_pooling(path, pooling), **kwargs)
        self.n_ctx = self.llama.n_ctx()
        self.n_vocab = self.llama.n_vocab()
        self.max_input_tokens = min(self.n_ctx, self.llama.n_batch)
        self.dimensions = self.llama.n_embd()
        self.worker = ModelWorker(name, queue)

    @property
    def waiting(self) -> int:
        return self.worker.waiting

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def check_tokens(self, index: int, tokens: list[int]) -> None:
        if not tokens:
            raise InvalidRequest(f"input[{index}] is empty", param="input")
        if len(tokens) > self.max_input_tokens:
            raise ContextLengthExceeded(
                f"input[{index}] has {len(tokens)} tokens; this model embeds at most {self.max_input_tokens}",
                param="input")
        if any(not 0 <= token < self.n_vocab for token in tokens):
            raise InvalidRequest(f"input[{index}] has token ids outside 0..{self.n_vocab - 1}", param="input")

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        for index, tokens in enumerate(inputs):
            self.check_tokens(index, tokens)
        return await self.worker.run(self._embed_blocking, inputs)

    def close(self) -> None:
        self.worker.close(self.llama.close)

    def _embed_blocking(self, inputs: list[list[int]]) -> list[list[float]]:
        # One sequence per decode: llama_cpp.Llama's context holds a single sequence.
        llama, vectors = self.llama, []
        for tokens in inputs:
            llama._ctx.kv_cache_clear()
            llama._batch.reset()
            llama._batch.add_sequence(tokens, 0, True)
            llama._ctx.decode(llama._batch)
            pointer = llama_cpp.llama_get_embeddings_seq(llama.ctx, 0)
            vectors.append(normalise(pointer[: self.dimensions]))
        llama._ctx.kv_cache_clear()
        return vectors
