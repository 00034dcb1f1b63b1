"""The host's sampler chains of one step, run side by side.

A request that is not plain greedy (a temperature, a seed, a grammar, a bias, penalties) samples on the
host through its own llama.cpp chain: a candidate list of the whole vocabulary, then top-k, top-p,
min-p, temperature and a draw. With Qwen3's 151,936 tokens that is ~0.25 ms a sequence here, so 16
sequences one after another took 4 ms of every step while the cores (or, on a GPU machine, the GPU)
waited. Each chain is its own (its random state, its grammar, its penalties' history) and
`llama_sampler_sample` is one C call that releases the GIL, so the chains of a step run on a few
threads at once, and every reply is the token sequence it would be sampled alone.

llama.cpp's getters synchronize the context and put the step's output rows in order on their first
call after a decode; that first call is made here, on the scheduler thread, before any chain runs, so
the concurrent calls only read."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import llama_cpp
from llama_cpp._internals import LlamaContext, LlamaSampler

Chain = tuple[int, LlamaSampler]  # a batch row with logits, and the chain that samples it


class ChainSampler:
    """Samples a step's chains on `threads` threads: the scheduler's own and `threads - 1` workers."""

    def __init__(self, threads: int) -> None:
        self._workers = max(0, threads - 1)
        self._pool: ThreadPoolExecutor | None = None

    def sample(self, context: LlamaContext, chains: Sequence[Chain]) -> dict[int, int]:
        """Each chain's token, by batch row."""
        if len(chains) < 2 or not self._workers:
            return {row: sampler.sample(context, row) for row, sampler in chains}
        llama_cpp.llama_get_logits_ith(context.ctx, chains[0][0])  # synchronize and order the rows, once
        shares = [chains[index::self._workers + 1] for index in range(min(len(chains), self._workers + 1))]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="sampler")
        running = [self._pool.submit(_sample_all, context, share) for share in shares[1:]]
        chosen = _sample_all(context, shares[0])
        for future in running:
            chosen.update(future.result())
        return chosen

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _sample_all(context: LlamaContext, chains: Sequence[Chain]) -> dict[int, int]:
    return {row: sampler.sample(context, row) for row, sampler in chains}
