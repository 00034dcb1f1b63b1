"""Replies → OpenAI legacy completion objects: a `text_completion`, or its chunks as events. Every
prompt × `n` choice is its own reply; a stream interleaves their chunks, each tagged with its index.
With `echo`, a choice's text starts with its prompt, and with `logprobs` too, with the prompt's tokens
and their log probabilities (the first token's null: nothing precedes it)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence

import attrs

from handler.api.answers.chat import usage_out
from handler.api.answers.sse import DONE, sse_event
from handler.api.calls import Replies
from handler.api.errors import error_body
from handler.api.protocols.chat import UsageOut
from handler.api.protocols.completions import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from handler.engine.chat import ChatEvent
from handler.engine.types import PromptLogprobs, TokenLogprob


def _generated(entries: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return CompletionLogprobs(tokens=[entry.text for entry in entries],
                              token_logprobs=[entry.logprob for entry in entries],
                              top_logprobs=[{choice.text: choice.logprob for choice in entry.top} for entry in entries],
                              text_offset=offsets)


def _prompt(scored: PromptLogprobs) -> CompletionLogprobs:
    later = _generated(scored.entries, len(scored.first))
    return CompletionLogprobs(tokens=[scored.first, *later.tokens], token_logprobs=[None, *later.token_logprobs],
                              top_logprobs=[None, *(later.top_logprobs or ())], text_offset=[0, *later.text_offset])


def _joined(parts: Sequence[CompletionLogprobs]) -> CompletionLogprobs:
    return CompletionLogprobs(tokens=[token for part in parts for token in part.tokens],
                              token_logprobs=[value for part in parts for value in part.token_logprobs],
                              top_logprobs=[top for part in parts for top in part.top_logprobs or ()],
                              text_offset=[offset for part in parts for offset in part.text_offset])


@attrs.define
class CompletionShaper:
    data: CompletionRequest
    echoes: Sequence[str]  # each prompt as text
    model: str
    id: str = attrs.field(factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = attrs.field(factory=lambda: int(time.time()))
    end_frame = DONE

    @property
    def _count(self) -> int:
        return len(self.echoes) * self.data.n

    def _echo(self, index: int) -> str:
        return self.echoes[index // self.data.n] if self.data.echo else ""

    @property
    def _logprobs(self) -> bool:
        return self.data.logprobs is not None

    async def body(self, replies: Replies) -> Completion:
        events: dict[int, list[ChatEvent]] = {index: [] for index in range(self._count)}
        async for index, event in replies:
            events[index].append(event)
        return Completion(id=self.id, created=self.created, model=self.model,
                          choices=[self._choice(index, events[index], replies.finals[index])
                                   for index in range(self._count)],
                          usage=usage_out(replies.usage()))

    def _choice(self, index: int, events: list[ChatEvent], final: ChatEvent) -> CompletionChoice:
        echo = self._echo(index)
        text = echo + "".join(event.delta.content for event in events if event.delta is not None)
        logprobs = None
        if self._logprobs:
            scored = [_prompt(event.prompt_logprobs) for event in events if event.prompt_logprobs is not None]
            generated = _generated([entry for event in events for entry in event.logprobs], len(echo))
            logprobs = _joined([*scored, generated])
        return CompletionChoice(index=index, text=text, finish_reason=final.finish_reason,  # type: ignore[arg-type]
                                logprobs=logprobs)

    def _event(self, choices: list[CompletionChoice], usage: UsageOut | None = None) -> bytes:
        return sse_event(Completion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage))

    async def frames(self, replies: Replies) -> AsyncGenerator[bytes, None]:
        offsets = {index: len(self._echo(index)) for index in range(self._count)}
        scored_echo = self.data.echo and self._logprobs  # each echo leaves with its prompt's log probabilities
        if self.data.echo and not scored_echo:
            yield b"".join(self._event([CompletionChoice(index=index, text=self._echo(index), finish_reason=None)])
                           for index in offsets)
        async for index, event in replies:
            if event.prompt_logprobs is not None:
                if scored_echo:
                    yield self._event([CompletionChoice(index=index, text=self._echo(index), finish_reason=None,
                                                        logprobs=_prompt(event.prompt_logprobs))])
                continue
            text = event.delta.content if event.delta is not None else ""
            logprobs = _generated(event.logprobs, offsets[index]) if self._logprobs else None
            offsets[index] += len(text)
            if text or event.finish_reason is not None:
                yield self._event([CompletionChoice(index=index, text=text, logprobs=logprobs,
                                                    finish_reason=event.finish_reason)])  # type: ignore[arg-type]
        if self.data.stream_options and self.data.stream_options.include_usage:
            yield self._event([], usage_out(replies.usage()))

    def error_frame(self, exc: Exception) -> bytes:
        return sse_event(error_body(exc)[1])
