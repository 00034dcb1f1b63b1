"""Embedding models: pooled vectors, L2-normalised as OpenAI's are, batched.

One thread per model owns a llama.cpp context with several sequences. It takes every request waiting
at that moment, and packs all their inputs into as few `llama_decode` calls as fit `n_batch` tokens
and `SEQUENCES_PER_DECODE` sequences, so many inputs in one request and many concurrent requests both
cost few decodes. Each sequence has its own KV stream, so an input's vector does not depend on what
it was batched with.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
from pathlib import Path
from typing import Any

import attrs
import llama_cpp
from llama_cpp._internals import LlamaBatch, LlamaContext
from llama_cpp._logger import set_verbose as llama_log_level

from handler.engine import llama_log
from handler.engine.early import Weights
from handler.engine.llama_options import POOLING_TYPES, ModelOptions, model_params
from handler.engine.pieces import detokenize
from handler.engine.types import DEFAULT_QUEUE, QueueLimits
from handler.errors import ContextLengthExceeded, InvalidRequest, Overloaded

log = logging.getLogger(__name__)
SEQUENCES_PER_DECODE = 16


def choose_pooling(metadata: dict[str, str], requested: str | None) -> int:
    """The manifest's pooling, else the GGUF's own, else mean (causal LMs declare none)."""
    if requested is not None:
        return POOLING_TYPES[requested]
    architecture = metadata.get("general.architecture", "")
    declared = f"{architecture}.pooling_type" in metadata
    return llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if declared else llama_cpp.LLAMA_POOLING_TYPE_MEAN


def normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


@attrs.define(eq=False)
class _Job:
    inputs: list[list[int]]
    future: asyncio.Future[list[list[float]]]
    loop: asyncio.AbstractEventLoop


class EmbeddingModel:
    def __init__(self, name: str, path: Path, options: ModelOptions,
                 queue_limits: QueueLimits = DEFAULT_QUEUE, *, early: Weights | None = None) -> None:
        self.name, self.queue_limits = name, queue_limits
        llama_log_level(options.verbose)
        # `early`: its weights, read from this very file with these options while the process started
        self.model = early.model if early is not None else llama_log.open_model(str(path), model_params(options))
        self.max_input_tokens = min(options.n_batch, options.n_ctx)
        self.context = LlamaContext(model=self.model, params=self._context_params(options),
                                    verbose=options.verbose)
        self.batch = LlamaBatch(n_tokens=self.max_input_tokens, embd=0, n_seq_max=SEQUENCES_PER_DECODE, verbose=False)
        self.n_vocab, self.dimensions = self.model.n_vocab(), self.model.n_embd()
        self.pooled = self.context.pooling_type() != llama_cpp.LLAMA_POOLING_TYPE_NONE
        self.in_flight = 0  # requests in this engine: being embedded or waiting for their turn
        self.decodes = 0  # llama_decode calls so far (batching shows as fewer decodes than inputs)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"embed-{name}", daemon=True)
        self._thread.start()

    def _context_params(self, options: ModelOptions) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = SEQUENCES_PER_DECODE
        params.n_ctx = self.max_input_tokens * SEQUENCES_PER_DECODE
        params.n_batch = params.n_ubatch = self.max_input_tokens  # a pooled input needs one micro-batch
        params.n_threads = params.n_threads_batch = options.n_threads
        params.embeddings, params.kv_unified, params.no_perf = True, False, True
        params.pooling_type = choose_pooling(self.model.metadata(), options.pooling)
        return params

    def detokenize(self, tokens: list[int]) -> str:
        return detokenize(self.model.vocab, tokens)

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=self.model.add_bos_token(), special=False)

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
        if self.in_flight > self.queue_limits.max_waiting:  # one runs, at most max_waiting wait behind it
            raise Overloaded(f"{self.waiting} requests are already waiting for model '{self.name}'",
                             retry_after_s=2)
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop.create_future(), loop)
        self.in_flight += 1
        self._jobs.put(job)
        try:
            return await job.future
        finally:
            self.in_flight -= 1

    @property
    def waiting(self) -> int:
        """Requests not yet taken up by the model's thread (the queue depth)."""
        return self._jobs.qsize()

    def close(self) -> None:
        self._jobs.put(None)

    def join(self, timeout_s: float) -> None:
        """Wait (blocking) for the model's thread to finish after `close`."""
        self._thread.join(timeout_s)

    # ---- the model's thread
    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            jobs = [job]
            while True:  # everything waiting now shares the decodes
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                jobs.append(more)
            self._serve(jobs)
        self.batch.close()
        self.context.close()
        self.model.close()

    def _serve(self, jobs: list[_Job]) -> None:
        try:
            vectors = self._embed_all([tokens for job in jobs for tokens in job.inputs])
        except Exception as exc:
            log.exception("embedding failed for model %s", self.name)
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
            return
        start = 0
        for job in jobs:
            job.loop.call_soon_threadsafe(_settle, job.future, vectors[start:start + len(job.inputs)], None)
            start += len(job.inputs)

    def _embed_all(self, inputs: list[list[int]]) -> list[list[float]]:
        vectors: list[list[float]] = []
        group: list[list[int]] = []
        for tokens in inputs:
            if group and (sum(map(len, group)) + len(tokens) > self.max_input_tokens
                          or len(group) == SEQUENCES_PER_DECODE):
                vectors += self._decode(group)
                group = []
            group.append(tokens)
        return vectors + (self._decode(group) if group else [])

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        self.context.kv_cache_clear()
        batch = self.batch.batch
        batch.n_tokens = 0
        for seq_id, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                row = batch.n_tokens
                batch.token[row], batch.pos[row], batch.n_seq_id[row] = token, position, 1
                batch.seq_id[row][0], batch.logits[row] = seq_id, True
                batch.n_tokens = row + 1
        self.context.decode(self.batch)
        self.decodes += 1
        if self.pooled:
            return [normalise(llama_cpp.llama_get_embeddings_seq(self.context.ctx, seq)[: self.dimensions])
                    for seq in range(len(group))]
        return self._mean_of_token_vectors(group)

    def _mean_of_token_vectors(self, group: list[list[int]]) -> list[list[float]]:
        """Pooling "none": average the per-token vectors ourselves (the API returns one vector per input)."""
        vectors, row = [], 0
        for tokens in group:
            total = [0.0] * self.dimensions
            for _ in tokens:
                token_vector = llama_cpp.llama_get_embeddings_ith(self.context.ctx, row)
                total = [a + b for a, b in zip(total, token_vector[: self.dimensions], strict=True)]
                row += 1
            vectors.append(normalise([value / len(tokens) for value in total]))
        return vectors


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
