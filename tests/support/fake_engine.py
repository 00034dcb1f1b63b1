"""Stand-ins for the llama.cpp models, for fast in-process tests of the API (routing, validation,
error mapping, streaming) with no model file and no compiled library involved.

They subclass the real engines without running their constructors (which load weights), and
implement only what the API and `start_chat` use; `fake_loader` takes the place of `load_model`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

from handler.engine.batching import BatchingChatModel
from handler.engine.embedding import EmbeddingModel
from handler.engine.generation import Generation
from handler.engine.llama_options import LlamaDefaults, ModelOptions, resolve_options
from handler.engine.loading import Loaded
from handler.engine.types import Footprint, PromptChoices, QueueLimits, SamplingParams, TextChunk
from handler.formats.qwen3 import Qwen3Format
from handler.store.manifest import ModelSpec
from handler.store.prefix_ram import Rate

REPLY = "Hello from the fake model."


class FakeChatModel(BatchingChatModel):
    def __init__(self, name: str, options: ModelOptions) -> None:  # noqa: D107 - no weights to load
        self.name, self.options, self.queue_limits = name, options, QueueLimits()
        self.n_ctx, self.n_parallel, self.n_batch = options.n_ctx, options.n_parallel, options.n_batch
        self.n_vocab = 256  # token ids are bytes
        self.prefill_rate, self.restore_rate = Rate(), Rate()
        self.format = Qwen3Format(name="chatml")
        self.finished = collections.Counter()
        self.slots = []
        self._queue = collections.deque()

    def tokenize(self, prompt: str) -> list[int]:
        return list(prompt.encode())  # one token per byte: enough for context-length checks

    def compile_grammar(self, gbnf: str) -> None:
        return None

    def special_tokens(self, texts: tuple[str, ...]) -> frozenset[int]:
        return frozenset()

    async def start_generations(self, prompts: Sequence[PromptChoices], grammar: object = None,
                                *, preserved: frozenset[int] = frozenset(), logprobs: int | None = None, tenant: str = "",
                                prompt_logprobs: int | None = None) -> list[Generation]:
        return [await self.start_generation(prompt.tokens, params) for prompt in prompts for params in prompt.choices]

    async def start_generation(self, prompt_tokens: list[int], params: SamplingParams, grammar: object = None, *,
                               preserved: frozenset[int] = frozenset(), logprobs: int | None = None) -> Generation:
        generation = Generation()
        generation.prompt_tokens = len(prompt_tokens)
        words = REPLY.split(" ")
        produced = min(len(words), params.max_tokens)
        for index in range(produced):  # one "token" per word
            generation.emit(TextChunk(text=(" " if index else "") + words[index]))
        reason = "length" if produced < len(words) else "stop"
        self.finished[reason] += 1
        generation.emit(TextChunk(finish_reason=reason, prompt_tokens=len(prompt_tokens), completion_tokens=produced))
        generation.mark_started()
        return generation

    def close(self) -> None:
        pass

    def join(self, timeout_s: float) -> None:
        pass


class FakeEmbeddingModel(EmbeddingModel):
    def __init__(self, name: str, options: ModelOptions) -> None:  # noqa: D107 - no weights to load
        self.name, self.queue_limits = name, QueueLimits()
        self.max_input_tokens, self.n_vocab, self.dimensions = options.n_batch, 256, 4
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        return 0

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        for index, tokens in enumerate(inputs):
            self.check_tokens(index, tokens)
        return [[1.0, 0.0, 0.0, 0.0] if len(tokens) % 2 else [0.0, 1.0, 0.0, 0.0] for tokens in inputs]

    def close(self) -> None:
        pass

    def join(self, timeout_s: float) -> None:
        pass


def fake_loader(spec: ModelSpec, path: Path, defaults: LlamaDefaults) -> Loaded:
    options = resolve_options(defaults, spec.options)
    model = FakeEmbeddingModel(spec.name, options) if spec.kind == "embedding" else FakeChatModel(spec.name, options)
    return Loaded(model, memory=Footprint(host=1024))
