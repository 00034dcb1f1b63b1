"""Log probabilities of generated tokens, read from the logits llama.cpp computed for a batch row.

Computed only for requests that ask (a log-softmax over the whole vocabulary per token); the
scheduler thread calls these between decode steps. `LogprobQueue` keeps them in step with the text
that leaves a slot, which stop strings can hold back or cut."""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs
import llama_cpp
import numpy as np

from handler.engine.types import TokenChoice, TokenLogprob

MAX_TOP_LOGPROBS = 20


def token_logprob(context: llama_cpp.llama_context_p, row: int, n_vocab: int, token: int, top: int,
                  piece: Callable[[int], bytes]) -> TokenLogprob:
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, row), shape=(n_vocab,))
    logits = logits.astype(np.float64)
    peak = logits.max()
    log_total = peak + np.log(np.exp(logits - peak).sum())
    choices: tuple[TokenChoice, ...] = ()
    if top > 0:
        best = np.argpartition(-logits, top - 1)[:top]
        best = best[np.argsort(-logits[best], kind="stable")]
        choices = tuple(TokenChoice(token=int(t), text=piece(int(t)).decode("utf-8", "replace"), bytes=piece(int(t)),
                                    logprob=float(logits[t] - log_total)) for t in best)
    return TokenLogprob(text="", bytes=piece(token), logprob=float(logits[token] - log_total), top=choices)


def prompt_logprob(context: llama_cpp.llama_context_p, row: int, n_vocab: int, token: int, top: int,
                   piece: Callable[[int], bytes]) -> TokenLogprob:
    """The log probability of prompt token `token` from the logits of the row before it: its text is
    its own piece (prompts are text already, nothing is held back)."""
    entry = token_logprob(context, row, n_vocab, token, top, piece)
    return attrs.evolve(entry, text=entry.bytes.decode("utf-8", "replace"))


class LogprobQueue:
    """Entries wait here until the text they produced leaves the slot, so every chunk carries the
    entries of exactly its text (their `text`s concatenate to it)."""

    def __init__(self) -> None:
        self._waiting: collections.deque[TokenLogprob] = collections.deque()

    def add(self, entry: TokenLogprob) -> None:
        self._waiting.append(entry)

    def take(self, emitted: str) -> tuple[TokenLogprob, ...]:
        """The entries that `emitted` (text now leaving the slot, in order) covers."""
        taken, left = [], len(emitted)
        while self._waiting and len(self._waiting[0].text) <= left:
            entry = self._waiting.popleft()
            left -= len(entry.text)
            taken.append(entry)
        return tuple(taken)

    def cut(self, emitted: str) -> tuple[TokenLogprob, ...]:
        """The last text of the reply: entries it covers, one cut short if a stop string ends inside
        it; entries wholly inside the stop string are dropped."""
        taken = list(self.take(emitted))
        left = len(emitted) - sum(len(entry.text) for entry in taken)
        if left and self._waiting:
            entry = self._waiting.popleft()
            taken.append(attrs.evolve(entry, text=entry.text[:left]))
        self._waiting.clear()
        return tuple(taken)
