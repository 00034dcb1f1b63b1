"""Plain values passed between the API layer and the engine."""

from __future__ import annotations

from typing import Any, Literal

import attrs

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@attrs.frozen
class QueueLimits:
    """How many requests may wait for a model's turn, and for how long."""

    max_waiting: int = 32
    timeout_s: float = 120.0


DEFAULT_QUEUE = QueueLimits()


@attrs.frozen
class SamplingParams:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] = attrs.field(factory=dict)
    grammar: str | None = None  # GBNF text constraining the output


@attrs.frozen
class TextChunk:
    """A piece of generated text; the last chunk of a generation carries `finish_reason` and counts."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class ChatRequest:
    """A chat completion as the engine sees it: messages and tools already validated."""

    messages: list[dict[str, Any]]
    params: SamplingParams
    tools: list[dict[str, Any]] | None = None
    enable_thinking: bool | None = None
    parallel_tool_calls: bool = True

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(tool["function"]["name"] for tool in self.tools or ())
