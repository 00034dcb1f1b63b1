"""How many prompt tokens a decode step may prefill beside the streams already generating.

A step's time grows with the tokens in it: one per running stream, plus whatever prompt is being
prefilled. Prefilling a long prompt in full-batch chunks stops every running stream for as long as
the chunk takes (seconds on a CPU). So each step gets a budget: the prompt tokens that fit a target
step time (`STEP_TARGET_MS`) once the running streams' tokens are counted, from a cost model learned
online from recent steps (seconds ≈ overhead + per-token cost × tokens; it differs with model,
threads and hardware). With no stream running, a prompt takes the whole batch: a lone request's
time to first token does not get worse.

A prompt's later chunks cost more per token than its first (each attends to everything read before
it): measured here, 66-token chunks of a 1,400-token prompt went from 189 to 402 ms while the fit
over recent steps lagged behind, and running streams waited up to 0.4 s for a 200 ms target. So
the latest mixed step's own cost per token bounds the next chunk too: the budget follows the prompt
as it deepens.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs

STEP_TARGET_MS = 200  # measured here: running streams wait 240-288 ms, a joining prompt 1.26-1.28x alone
# llama.cpp's CPU matrix products take a slower path for micro-batches under 64 tokens (measured here:
# 319 vs 403 prompt tokens/s), and a step that mixes sequences is split into a micro-batch holding one
# token of each sequence and one holding the rest of the prompt chunk. So a chunk beside running streams
# is 1 + a multiple of CHUNK_QUANTUM, at least 1 + 64: a 1,400-token prompt joining a stream here took
# 1.26x its time alone in 65-token chunks, 1.60x in 64-token ones.
CHUNK_QUANTUM = 16
MIN_PREFILL = 1 + 64  # prompt tokens a step always takes, so a long prompt always advances
FIRST_GUESS_PREFILL = MIN_PREFILL  # before anything was measured
WINDOW = 32  # recent steps the cost model is fitted on


@attrs.define
class StepBudget:
    target_s: float
    max_tokens: int  # n_batch
    _samples: collections.deque[tuple[int, float]] = attrs.field(factory=lambda: collections.deque(maxlen=WINDOW))
    _latest_mixed: tuple[int, float] | None = None  # (tokens, seconds) of the latest step that also prefilled

    def prefill_allowance(self, decoding: int) -> int:
        """Prompt tokens the next step may take beside `decoding` running streams."""
        room = self.max_tokens - decoding
        if decoding == 0:
            return room
        if room < MIN_PREFILL:  # a small batch: whatever fits
            return max(0, room)
        cost = self.cost_model()
        if cost is None:
            return FIRST_GUESS_PREFILL
        overhead, per_token = cost
        if self._latest_mixed is not None:  # the prompt being read costs at least what its last chunk did
            tokens, seconds = self._latest_mixed
            per_token = max(per_token, (seconds - overhead) / tokens)
        fitting = int((self.target_s - overhead) / per_token) - decoding if per_token > 0 else room
        return _aligned(min(room, max(MIN_PREFILL, fitting)))

    def record(self, tokens: int, seconds: float, *, decoding: int) -> None:
        """A step's size and duration. Only steps with running streams teach the model: those are the
        steps it sizes, and a lone prompt's full batches cost less per token than small chunks do."""
        if decoding:
            self._samples.append((tokens, seconds))
            self._latest_mixed = (tokens, seconds) if tokens > decoding else self._latest_mixed

    def cost_model(self) -> tuple[float, float] | None:
        """(overhead seconds, seconds per token) fitted by least squares on recent steps."""
        if len(self._samples) < 2:
            return None
        count = len(self._samples)
        mean_tokens = sum(tokens for tokens, _ in self._samples) / count
        mean_seconds = sum(seconds for _, seconds in self._samples) / count
        spread = sum((tokens - mean_tokens) ** 2 for tokens, _ in self._samples)
        if spread == 0:  # every step the same size: no way to split overhead from per-token cost
            return 0.0, mean_seconds / max(mean_tokens, 1)
        per_token = sum((tokens - mean_tokens) * (seconds - mean_seconds) for tokens, seconds in self._samples) / spread
        per_token = max(per_token, 1e-6)
        return max(0.0, mean_seconds - per_token * mean_tokens), per_token


def _aligned(tokens: int) -> int:
    """The largest chunk of 1 + a multiple of CHUNK_QUANTUM tokens within `tokens` (>= MIN_PREFILL)."""
    return 1 + (tokens - 1) // CHUNK_QUANTUM * CHUNK_QUANTUM


@attrs.frozen
class StepRecord:
    """What one engine step did, for metrics and tests."""

    seconds: float
    decoded: tuple[int, ...]  # sequence ids that got their next token decoded
    prefilled: dict[int, int]  # sequence id → prompt tokens prefilled
    token_gaps: tuple[float, ...]  # seconds since each decoded stream's previous token
    host_seconds: float = 0.0  # the part spent outside llama_decode: building the batch, sampling, text


StepObserver = Callable[[StepRecord], None]
