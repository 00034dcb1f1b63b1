"""The serial chat engine: one llama-cpp-python `Llama` per model, one generation at a time.

A `Llama` is not thread-safe, so each model owns a single worker thread; requests queue on it in
arrival order and the event loop never blocks. Tokens travel back to the loop through an asyncio
queue. A consumer that goes away (client disconnect) sets a cancel flag the worker checks before each
decode step, so the model is free for the next request after at most one more token.
The continuous-batching engine can replace this class: the rest of the server only uses `tokenize`,
`compile_grammar`, `start_generation`, `n_ctx`, `format`, `worker` and `close`.
"""

from __future__ import annotations

import asyncio
import codecs
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from handler.engine.text import StopMatcher
from handler.engine.types import SamplingParams, TextChunk
from handler.engine.worker import ModelWorker, QueueLimits
from handler.formats.registry import ChatFormat, choose_format

Emit = Callable[[TextChunk | BaseException], None]


class GrammarError(ValueError):
    """A generation constraint llama.cpp cannot use."""


def _token_text(llama: llama_cpp.Llama, token: int) -> str:
    return llama._model.token_get_text(token) if token >= 0 else ""


class Generation:
    """A generation running on a model's thread, read as an async stream of `TextChunk`s.
    Stopping early (or dropping it) cancels the generation before its next decode step."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[TextChunk | BaseException] = asyncio.Queue()

    def emit(self, item: TextChunk | BaseException) -> None:  # called on the model's thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancel.set()

    async def chunks(self) -> AsyncIterator[TextChunk]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel.set()

    def __del__(self) -> None:
        self.cancel.set()


class SerialChatModel:
    def __init__(self, name: str, path: Path, kwargs: dict[str, Any], chat_format: str | None,
                 queue: QueueLimits = QueueLimits()) -> None:
        self.name = name
        self.llama = llama_cpp.Llama(model_path=str(path), **kwargs)
        self.n_ctx = self.llama.n_ctx()
        self.n_vocab = self.llama.n_vocab()
        self.format: ChatFormat = choose_format(
            chat_format, self.llama.metadata.get("tokenizer.chat_template"),
            bos_token=_token_text(self.llama, self.llama.token_bos()),
            eos_token=_token_text(self.llama, self.llama.token_eos()),
        )
        self.worker = ModelWorker(name, queue)
        self._closing = threading.Event()

    def tokenize(self, prompt: str) -> list[int]:
        """Prompt tokens; special tokens in the text are parsed, BOS added once if the model wants it."""
        bos = getattr(self.format, "bos_token", "")
        add_bos = not (bos and prompt.startswith(bos))
        return self.llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def compile_grammar(self, gbnf: str) -> llama_cpp.LlamaGrammar:
        """Check that llama.cpp accepts `gbnf` before it reaches a sampler: a grammar that fails to
        parse there yields a NULL sampler, and adding that to a chain crashes the process."""
        probe = llama_cpp.llama_sampler_init_grammar(self.llama._model.vocab, gbnf.encode(), b"root")
        if not probe:
            raise GrammarError("llama.cpp could not parse the grammar built for this request")
        llama_cpp.llama_sampler_free(probe)
        return llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)

    async def start_generation(self, prompt_tokens: list[int], params: SamplingParams,
                               grammar: llama_cpp.LlamaGrammar | None = None) -> Generation:
        """Wait for this model's turn (429 when the line is full, 503 after the queue timeout), then
        return the running generation: refusals happen before any response byte is sent."""
        generation = Generation()
        await self.worker.start(self._run, prompt_tokens, params, grammar, generation.cancel, generation.emit)
        return generation

    def close(self) -> None:
        """Free the model once the generation in progress ends; queued ones finish as cancelled."""
        self._closing.set()
        self.worker.close(self.llama.close)

    def _run(self, prompt_tokens: list[int], params: SamplingParams, grammar: Any,
             cancel: threading.Event, emit: Emit) -> None:
        try:
            if cancel.is_set() or self._closing.is_set():
                emit(TextChunk(finish_reason="cancelled", prompt_tokens=len(prompt_tokens)))
                return
            self._generate_blocking(prompt_tokens, params, grammar, cancel, emit)
        except Exception as exc:  # handed to the awaiting request, which maps it to an error response
            emit(exc)

    def _generate_blocking(self, prompt_tokens: list[int], params: SamplingParams, grammar: Any,
                           cancel: threading.Event, emit: Emit) -> None:
        llama = self.llama
        llama.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop)
        max_tokens = min(params.max_tokens, self.n_ctx - len(prompt_tokens))
        finish, produced, hit = "length", 0, False
        tokens = llama.generate(
            prompt_tokens, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
            temp=params.temperature, repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
            logits_processor=_logit_bias_processor(params.logit_bias), grammar=grammar,
        )
        try:
            for token in tokens if max_tokens > 0 else ():
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                    finish = "stop"
                    break
                produced += 1
                text, hit = stops.push(decoder.decode(llama._model.detokenize([token])))
                if text:
                    emit(TextChunk(text=text))
                if hit:
                    finish = "stop"
                    break
                if produced >= max_tokens:
                    break
        finally:
            tokens.close()
        if not hit and finish != "cancelled":  # text held back for a stop string that never came
            tail, _ = stops.push(decoder.decode(b"", final=True))
            if tail := tail + stops.flush():
                emit(TextChunk(text=tail))
        emit(TextChunk(finish_reason=finish, prompt_tokens=len(prompt_tokens), completion_tokens=produced))


def _logit_bias_processor(bias: dict[int, float]) -> Any:
    if not bias:
        return None
    ids = np.array(list(bias), dtype=np.intc)
    values = np.array(list(bias.values()), dtype=np.single)

    def apply(_input_ids: Any, scores: Any) -> Any:
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([apply])
