"""The continuous-batching chat engine: one llama.cpp context per model with N_PARALLEL sequences,
decoded together.

A scheduler thread owns the context. Each step it builds one batch holding the next token of every
decoding sequence plus as many prompt tokens of newcomers as still fit `n_batch` (long prompts are
prefilled in chunks across steps, so running streams never stall behind them), calls `llama_decode`
once, and samples each sequence with its own sampler (parameters, grammar, seed). Requests join
between steps and leave as soon as they finish or are cancelled. A finished sequence keeps its KV
cache: the next request whose prompt shares its prefix (a chat's next turn) takes that slot and
skips re-reading the prefix. Requests beyond the slots wait in a bounded line (429 when full, 503
after QUEUE_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaModel
from llama_cpp._logger import set_verbose as llama_log_level
from llama_cpp.llama_grammar import LlamaGrammar

from handler.engine import device_sampling, llama_log, state_copies
from handler.engine.chains import ChainSampler
from handler.engine.early import Weights
from handler.engine.generation import Generation, delivered_together
from handler.engine.llama_options import ModelOptions, model_params
from handler.engine.logprobs import prompt_logprob, token_logprob
from handler.engine.memory import kv_bytes_per_token
from handler.engine.pieces import PieceReader, detokenize
from handler.engine.sampling import DeviceChain, build_sampler, device_chain, is_plain_greedy
from handler.engine.schema_limits import SchemaLimitExceeded, check_grammar
from handler.engine.slots import Job, Slot, Submission, choose_slot, next_to_busy
from handler.engine.state_copies import StateCopies
from handler.engine.step_budget import StepBudget, StepObserver, StepRecord
from handler.engine.threads import CpuThreadPool, pool_wanted
from handler.engine.types import DEFAULT_QUEUE, FinishReason, PromptChoices, QueueLimits, SamplingParams
from handler.errors import Overloaded, ServiceUnavailable
from handler.formats.chat_format import ChatFormat
from handler.formats.registry import choose_format
from handler.store.prefix_ram import Rate, State
from handler.store.prefixes import PrefixSpace, PrefixStore, SavedPrefix, digest

Delivery = Callable[[State | None], None]  # what is done with a sequence's copied state (None: the copy failed)

MEASURED_PREFILL = 32  # prompt tokens a prefill-only step needs to count for the prefill rate
SCORED_ROWS = 64  # prompt positions a step computes logits for (each row holds the whole vocabulary's)
log = logging.getLogger(__name__)

# `deterministic` models prefill every prompt from its first token in chunks of this many tokens,
# whatever else runs: llama.cpp's CPU kernels compute a row differently for small and large row
# counts (flash attention's tiled path, quantized matmuls), so only a fixed split reproduces a reply.
# (They also decode each sequence in its own llama_decode: see `_step`.)
DETERMINISTIC_CHUNK = 64
# A sequence's saved KV state beyond its cells' data: per-cell positions and sequence ids, per-layer
# headers. A saved file whose state is larger than n_ctx tokens' cells plus this is not ours.
STATE_OVERHEAD = 1 << 20
USERS_WAIT_S = 30  # a tokenization in progress when the model is unloaded (they take milliseconds)
# While every job in the line waits (a saved prefix being looked up, a sibling whose leader is not in a
# slot yet) and no slot is busy, the scheduler sleeps until notified, and looks again after this long
# at most: a leader cancelled from another thread does not notify.
WAITING_LINE_RECHECK_S = 0.05


class GrammarError(ValueError):
    """A generation constraint llama.cpp cannot use."""


class BatchingChatModel:
    def __init__(self, name: str, path: Path, options: ModelOptions, queue: QueueLimits = DEFAULT_QUEUE, *,
                 on_step: StepObserver | None = None, clock: Callable[[], float] = time.perf_counter,
                 prefixes: PrefixStore | None = None, identity: str = "", early: Weights | None = None) -> None:
        self.name, self.options, self.queue_limits = name, options, queue
        self.budget = StepBudget(target_s=options.step_target_ms / 1000, max_tokens=options.n_batch)
        self.on_step, self.clock = on_step, clock
        self.n_parallel = options.n_parallel
        self.n_ctx = options.n_ctx  # per request
        self.n_batch = options.n_batch
        self.deterministic = options.deterministic
        self.fixed_chunk = max(1, min(DETERMINISTIC_CHUNK, self.n_batch - self.n_parallel))
        llama_log_level(options.verbose)
        if early is not None:  # loaded from this very file with these options while the process started
            self.model, self.context = early.model, early.context
        else:
            self.model = llama_log.open_model(str(path), model_params(options))
            self.context = LlamaContext(model=self.model, params=context_params(options), verbose=options.verbose)
        self.threads = CpuThreadPool(options.n_threads, enabled=pool_wanted(options.repack))
        self.threads.attach(self.context.ctx)
        self.chains = ChainSampler(options.n_threads)  # host chains side by side, between decodes
        self.device = device_sampling.DeviceSamplers(self.context.ctx) \
            if device_sampling.wanted(options) else None
        self.batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=self.n_parallel, verbose=False)
        self.n_vocab = self.model.n_vocab()
        self._logits_row = ctypes.c_float * self.n_vocab
        self.n_swa = llama_cpp.llama_model_n_swa(self.model.model)  # 0 unless sliding-window attention
        self.pieces = PieceReader(self.model.vocab)  # used on the scheduler thread only
        self.format: ChatFormat = choose_format(
            options.chat_format, self.model.metadata().get("tokenizer.chat_template"),
            custom_template=options.chat_template, bos_token=_token_text(self.model, self.model.token_bos()),
            eos_token=_token_text(self.model, self.model.token_eos()))
        self.slots = [Slot(seq_id=index) for index in range(self.n_parallel)]
        self._special_ids: dict[tuple[str, ...], frozenset[int]] = {}
        # Prompt prefixes saved on the volume, under everything that makes a KV state valid.
        self.prefixes = None if options.deterministic else prefixes
        self.prefix_space = self._prefix_space(identity or path.name)
        self._queue: collections.deque[Job] = collections.deque()
        self.finished: collections.Counter[str] = collections.Counter()  # generations by finish reason
        self._wake = threading.Condition()
        self._closing = False
        self._users = threading.Condition()  # threads using the vocabulary now (see `in_use`)
        self._using, self._freed = 0, False
        self._copy_sources: set[int] = set()  # sequences copied from since the last decode (scheduler thread)
        self._restored: dict[int, SavedPrefix] = {}  # restored states no decode has read past yet, by sequence
        self.prefill_rate, self.restore_rate = Rate(), Rate()  # prompt tokens a second; state bytes a second
        # States being copied for the prefix store, off this thread (see `engine.state_copies`).
        self._saving: StateCopies[Delivery] = StateCopies(self.context.ctx, concurrent=state_copies.concurrent(options))
        self._thread = threading.Thread(target=self._run, name=f"batch-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy_slots(self) -> int:
        return sum(slot.busy for slot in self.slots)

    # What autoscalers and inference gateways read (approximate: read from another thread, between steps).
    @property
    def requests_waiting(self) -> int:
        """Requests in the line none of whose generations has a slot yet."""
        return len({job.submission for job in list(self._queue) if not job.submission.serving})

    @property
    def requests_running(self) -> int:
        """Requests with at least one generation in a slot."""
        return len({job.submission for job in [slot.job for slot in self.slots] if job is not None})

    @property
    def kv_utilization(self) -> float:
        """The share (0-1) of the KV cells the running generations hold or are about to read."""
        held = sum(len(slot.cached) + len(slot.pending) for slot in list(self.slots) if slot.job is not None)
        return min(1.0, held / (self.n_ctx * self.n_parallel))

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around any use of the model's vocabulary from another thread (tokenizing, grammars): the
        scheduler frees the model only once no such use is under way, and none starts after that
        (`ServiceUnavailable`: it was unloaded), so a request racing an unload gets a 503, not a crash."""
        with self._users:
            if self._freed:
                raise self._unloaded()
            self._using += 1
        try:
            yield
        finally:
            with self._users:
                self._using -= 1
                self._users.notify_all()

    def tokenize(self, prompt: str, *, add_bos: bool = True) -> list[int]:
        """Prompt tokens; special tokens in the text are parsed, BOS added once if the model wants it."""
        with self.in_use():
            bos = getattr(self.format, "bos_token", "")
            add_bos = add_bos and self.model.add_bos_token() and not (bos and prompt.startswith(bos))
            return self.model.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        with self.in_use():
            return detokenize(self.model.vocab, tokens)

    def special_tokens(self, texts: tuple[str, ...]) -> frozenset[int]:
        """The ids of those `texts` that are single special tokens of this vocabulary (a chat format's
        markers, such as `[TOOL_CALLS]`, whose text its parser must see)."""
        if texts not in self._special_ids:  # a format's markers never change: looked up once
            with self.in_use():
                self._special_ids[texts] = self._single_special_tokens(texts)
        return self._special_ids[texts]

    def _single_special_tokens(self, texts: tuple[str, ...]) -> frozenset[int]:
        reader, ids = PieceReader(self.model.vocab), set()  # `self.pieces` belongs to the scheduler thread
        for text in texts:
            tokens = self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if len(tokens) == 1 and not reader.piece(tokens[0]):  # no text unless rendered as special
                ids.add(tokens[0])
        return frozenset(ids)

    def compile_grammar(self, gbnf: str) -> LlamaGrammar:
        """Check that llama.cpp accepts `gbnf` before it reaches a sampler: a grammar that fails to
        parse there yields a NULL sampler, and adding that to a chain crashes the process; one nested
        too deeply overflows the stack of llama.cpp's recursive parser, so it is measured first."""
        try:
            check_grammar(gbnf, "grammar")
        except SchemaLimitExceeded as exc:
            raise GrammarError(str(exc)) from None
        with self.in_use():
            probe = llama_cpp.llama_sampler_init_grammar(self.model.vocab, gbnf.encode(), b"root")
        if not probe:
            raise GrammarError("llama.cpp could not parse the grammar built for this request")
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def _prefix_space(self, identity: str) -> PrefixSpace:
        """The namespace of this model's saved prefixes: everything a sequence's KV state depends on (the
        model's content, the KV layout: context length, streams, cell types, attention kernel, window,
        rope, and the llama.cpp build), and how large a state of a whole context can be."""
        params = context_params(self.options)
        name = digest(identity, params.n_ctx, params.n_seq_max, params.kv_unified, params.type_k, params.type_v,
                      params.flash_attn_type, params.swa_full, params.rope_freq_base, params.rope_freq_scale,
                      self.n_swa, llama_cpp.__version__)
        largest = self.n_ctx * kv_bytes_per_token(self.model.metadata()) + STATE_OVERHEAD
        return PrefixSpace(name, max_tokens=self.n_ctx,
                           max_state_bytes=min(largest, self.prefixes.max_state_bytes if self.prefixes else largest))

    async def start_generation(self, prompt_tokens: list[int], params: SamplingParams,
                               grammar: LlamaGrammar | None = None, *, preserved: frozenset[int] = frozenset(),
                               logprobs: int | None = None, tenant: str = "") -> Generation:
        """One generation of one prompt (see `start_generations`)."""
        (generation,) = await self.start_generations([PromptChoices(prompt_tokens, [params])], grammar,
                                                     preserved=preserved, logprobs=logprobs, tenant=tenant)
        return generation

    async def start_generations(self, prompts: Sequence[PromptChoices], grammar: LlamaGrammar | None = None, *,
                                preserved: frozenset[int] = frozenset(), logprobs: int | None = None,
                                tenant: str = "", prompt_logprobs: int | None = None) -> list[Generation]:
        """Queue one request (a generation per choice of each prompt, in order) and wait until its first
        generation has a slot: `Overloaded` when the line already holds MAX_QUEUE waiting requests,
        `ServiceUnavailable` after the queue timeout; either way before any response byte is sent, and
        a request that stops waiting (timeout, client gone) leaves the line at once. Its other
        generations then take slots in turn, ahead of later requests, with no timeout of their own: a
        choice that copies its prompt's KV cells, or one that waits for a slot its own request holds.
        With `prompt_logprobs`, each prompt is read whole (no reuse) with logits for every position."""
        submission, jobs, leaders = Submission(), [], []
        deadline = self.clock() + self.options.max_request_s if self.options.max_request_s > 0 else None
        looking_up = prompt_logprobs is None and self._may_have_saved(prompts, tenant)
        for prompt in prompts:
            leader = None
            for params in prompt.choices:
                generation = Generation()
                generation.prompt_tokens = len(prompt.tokens)
                jobs.append(Job(prompt=prompt.tokens, params=params, grammar=grammar, generation=generation,
                                submission=submission, preserved=preserved, logprobs=logprobs, leader=leader,
                                deadline=deadline, tenant=tenant, looking_up=looking_up and leader is None,
                                prompt_logprobs=prompt_logprobs, shares_first_row=len(prompt.choices) > 1))
                leader = leader or jobs[-1]
            leaders.append(leader)
        with self._wake:  # checked and joined at once: requests arriving together cannot overfill the line
            if self._closing:
                raise self._unloaded()
            self._check_line()
            self._queue.extend(jobs)
            self._wake.notify()
        try:  # the first job is the first of them `_admit` takes: the line is in order, and it leads
            await asyncio.wait_for(self._turn(jobs[0], leaders if looking_up else [], tenant),
                                   self.queue_limits.timeout_s)
            if (refusal := jobs[0].generation.refused) is not None:
                raise refusal
        except TimeoutError:
            self._withdraw(jobs)
            raise ServiceUnavailable(f"waited {self.queue_limits.timeout_s:g}s for model '{self.name}'",
                                     code="queue_timeout", retry_after_s=5) from None
        except BaseException:
            self._withdraw(jobs)
            raise
        return [job.generation for job in jobs]

    def _check_line(self) -> None:
        """`Overloaded` when a new request would wait and MAX_QUEUE requests already do (a request whose
        first job has a slot is being served, however many of its jobs still wait). Under `_wake`."""
        if sum(not slot.busy for slot in self.slots) > len(self._queue):
            return  # a slot is free for it at once
        waiting = len({job.submission for job in self._queue if not job.submission.serving})
        if waiting >= self.queue_limits.max_waiting:
            raise Overloaded(f"{waiting} requests are already waiting for model '{self.name}'", retry_after_s=2)

    def _may_have_saved(self, prompts: Sequence[PromptChoices], tenant: str) -> bool:
        return any(self._wants_saved(prompt.tokens, tenant) for prompt in prompts)

    def _wants_saved(self, prompt: list[int], tenant: str) -> bool:
        """Whether the prompt is long enough for a saved prefix, and no slot holds as much of it."""
        store = self.prefixes
        return (store is not None and len(prompt) > store.min_tokens
                and max(slot.reusable_prefix(prompt, tenant) for slot in self.slots) < store.min_tokens)

    async def _turn(self, first: Job, leaders: Sequence[Job | None], tenant: str) -> None:
        """Wait until the request's first job has a slot, looking up saved prefixes first when asked
        (only a request the line took costs a look-up)."""
        if leaders:
            await self._look_up_saved(leaders, tenant)
        await first.generation.started.wait()

    async def _look_up_saved(self, leaders: Sequence[Job | None], tenant: str) -> None:
        """Each prompt's longest saved prefix, read on the store's threads while its jobs hold their
        place in the line (not admitted until then). The jobs of one request share one loaded state."""
        store = self.prefixes
        assert store is not None
        space = self.prefix_space.for_tenant(tenant)
        try:
            for job in leaders:
                if job is not None and self._wants_saved(job.prompt, tenant):
                    job.saved = await store.find(space, job.prompt, self._worth)
        finally:
            with self._wake:
                for job in leaders:
                    if job is not None:
                        job.looking_up = False
                self._wake.notify()

    def _withdraw(self, jobs: Sequence[Job]) -> None:
        """Take jobs that stopped waiting out of the line; those already admitted are cancelled."""
        for job in jobs:
            job.generation.cancel.set()  # one admitted meanwhile: the scheduler sees it before its next step
        leaving = set(jobs)
        with self._wake:  # one pass over the line, however many choices and prompts the request had
            staying = [job for job in self._queue if job not in leaving]
            self.finished["cancelled"] += len(self._queue) - len(staying)
            self._queue.clear()
            self._queue.extend(staying)
            self._wake.notify()

    def close(self) -> None:
        """Stop after the current step; requests still running or waiting end as cancelled."""
        with self._wake:
            self._closing = True
            self._wake.notify()

    def _unloaded(self) -> ServiceUnavailable:
        return ServiceUnavailable(f"model '{self.name}' was unloaded", code="model_unloaded", retry_after_s=1)

    def join(self, timeout_s: float) -> None:
        """Wait (blocking) for the scheduler thread to finish after `close`."""
        self._thread.join(timeout_s)

    # ---- the scheduler thread
    def _run(self) -> None:
        try:
            while self._next_step():
                pass
        finally:
            self._release_everything()

    def _next_step(self) -> bool:
        with self._wake:  # nothing to do: no busy slot, and no job in the line that may be admitted now
            while not self._closing and not any(slot.busy for slot in self.slots) \
                    and all(job.waits for job in self._queue):
                self._wake.wait(WAITING_LINE_RECHECK_S if self._queue else None)
            if self._closing:
                return False
        self._hand_over_saved()
        with delivered_together():
            self._admit()
        active = [slot for slot in self.slots if slot.busy]
        if active:
            try:
                with delivered_together():
                    self._step(active)
            except Exception as exc:  # a failed decode fails the requests in it, not the engine
                log.exception("decode step failed for model %s", self.name)
                for saved in self._restored.values():  # a state restored just before is suspect: never again
                    self._drop_file(saved, "a decode failed right after it was restored")
                self._restored.clear()
                for slot in active:
                    self._free(slot)
                    slot.fail(exc)
        return True

    def _admit(self) -> None:
        while self._queue:  # read without the lock: a job appended meanwhile is admitted at the next step
            free = [slot for slot in self.slots if not slot.busy]
            with self._wake:  # the loop appends and withdraws jobs; only this thread admits them
                job = next((job for job in self._queue if not job.waits), None) if free else None
                if job is None:
                    return
                self._queue.remove(job)
                job.submission.serving = True
            if job.generation.cancel.is_set():
                self.finished["cancelled"] += 1
                continue
            slot, shared = choose_slot(free, job.prompt, job.tenant, self._busy_sequences())
            # A prompt scored for its log probabilities is read whole: reused cells have no logits.
            scoring = job.prompt_logprobs is not None
            reusable = 0 if self.deterministic or scoring else self._still_cached(slot, shared)
            saved = job.saved
            # A slot whose cells a copy still reads at the next decode takes no saved state before then.
            restoring = (saved is not None and not scoring and min(saved.common, len(job.prompt) - 1) > reusable
                         and slot.seq_id not in self._copy_sources)
            copying = self._keep_evicted(slot, keep=0 if restoring else reusable)
            if restoring:
                assert saved is not None
                prefix = self._restore(slot, saved, len(job.prompt) - 1)  # once a copy under way has ended
                job.generation.restored_tokens, job.generation.restored_from = prefix, saved.tier
            elif copying:
                prefix = reusable  # the cells past it go once their copy has ended (`_evicted`); the prompt waits
            else:
                prefix = self._forget(slot, keep=reusable)
            job.generation.cached_tokens = prefix
            self._assign(slot, job, prefix)

    def _busy_sequences(self) -> list[int]:
        return [slot.seq_id for slot in self.slots if slot.busy]

    def _restore(self, slot: Slot, saved: SavedPrefix, limit: int) -> int:
        """Load a saved prefix's KV state into the slot and keep what the prompt shares with it (at most
        `limit` tokens); returns how many tokens the slot now holds. A state llama.cpp refuses, or one
        that does not hold every position its tokens say, is dropped from the store (0: read the prompt)."""
        self._forget(slot, keep=0)
        started = self.clock()
        if not llama_cpp.llama_state_seq_set_data(self.context.ctx, _readable(saved.state), len(saved.state),
                                                  slot.seq_id):
            return self._drop_restored(slot, saved, "llama.cpp refused its KV state")
        self.restore_rate.record(len(saved.state), self.clock() - started)
        if not self._holds(slot, len(saved.tokens)) \
                or llama_cpp.llama_memory_seq_pos_max(self.context.memory, slot.seq_id) != len(saved.tokens) - 1:
            return self._drop_restored(slot, saved, "its KV state does not hold the positions of its tokens")
        slot.cached = list(saved.tokens)
        self._restored[slot.seq_id] = saved
        return self._forget(slot, keep=min(saved.common, limit))

    def _drop_restored(self, slot: Slot, saved: SavedPrefix, why: str) -> int:
        self._drop_file(saved, why)
        self._forget(slot, keep=0)
        return 0

    def _drop_file(self, saved: SavedPrefix, why: str) -> None:
        assert self.prefixes is not None  # only a store hands out saved prefixes
        self.prefixes.reject(saved, why)

    def _worth(self, common: int, state_bytes: int, fetch_seconds: float) -> bool:
        """Whether restoring a saved state (fetched in `fetch_seconds`, then loaded into a slot) beats
        reading its `common` tokens, by this model's measured rates: on a GPU a prompt can be read faster
        than a large state is copied in. Until both rates are measured, restoring is assumed to pay (the
        first restore and the first prompt read measure them)."""
        reading = self.prefill_rate.seconds_for(common)
        loading = self.restore_rate.seconds_for(state_bytes)
        if reading is None or loading is None:
            return True
        return fetch_seconds + loading < reading

    def _keep_evicted(self, slot: Slot, keep: int) -> bool:
        """The slot's cells past `keep` are about to be overwritten by another prompt: when they hold a
        conversation long enough to save, its state goes to the store's memory tier first, so it comes
        back from there instead of being read again (bounded by the tier's size). That copy runs beside
        the other sequences' decoding and True is returned: the cells past `keep` are dropped once it has
        ended (`_evicted`), and the new prompt is read after that."""
        store = self.prefixes
        if store is None or not store.ram.budget_bytes or len(slot.cached) - keep < store.min_tokens:
            return False
        space = self.prefix_space.for_tenant(slot.tenant)
        if store.ram.holds(space.name, slot.cached):
            return False
        max_bytes = min(store.ram.max_state_bytes, space.max_state_bytes)
        evicted = functools.partial(self._evicted, slot, space, list(slot.cached), keep)
        self._saving.start(slot.seq_id, max_bytes, evicted)
        return True

    def _evicted(self, slot: Slot, space: PrefixSpace, tokens: list[int], keep: int, state: State | None) -> None:
        """The state of the conversation a new prompt took the slot from has been copied: keep it in
        memory, and drop the old cells past `keep` before the new prompt is read into them. A model that
        cannot drop part of a sequence (recurrent, hybrid) loses all of it: the new prompt is then read
        from its start."""
        if state is not None and self.prefixes is not None:
            self.prefixes.keep(space, tokens, state)
        held = self._forget(slot, keep)
        if held < keep:
            slot.read_again_from(held)

    def _save_prefix(self, job: Job, slot: Slot) -> None:
        """The slot has just read `job`'s whole prompt (its KV holds exactly that): start copying its state
        for the prefix store, unless the prompt is short, a saved prefix already covers it, or the copy
        would be larger than the store takes (it never grows memory past a quarter of its budget). The
        copy runs beside the other sequences' decoding; this one waits for it (`_hand_over_saved`)."""
        store = self.prefixes
        space = self.prefix_space.for_tenant(job.tenant)
        if store is None or len(job.prompt) < store.min_tokens or store.covers(space, job.prompt):
            return
        self._saving.start(slot.seq_id, space.max_state_bytes,
                           functools.partial(self._save_prompt_state, space, list(job.prompt)))

    def _save_prompt_state(self, space: PrefixSpace, prompt: list[int], state: State | None) -> None:
        store = self.prefixes
        if state is None or store is None:
            return
        # Saved only where it can pay: a state the volume gives back slower than the prompt is read again
        # stays in memory only.
        if self._worth(len(prompt), len(state), store.read_rates["volume"].seconds_for(len(state)) or 0.0):
            store.save_later(space, prompt, state)
        else:
            store.keep(space, prompt, state)

    def _hand_over_saved(self) -> None:
        """Deliver the states copied since the last look (to the prefix store)."""
        for state, deliver in self._saving.take_finished():
            deliver(state)

    def _admit_copies(self, leader: Job, source: Slot, row: int, gaps: list[float]) -> None:
        """`leader`'s prompt has just been read: its waiting sibling choices take free slots with a copy
        of its KV cells and sample their first token from its logits (`row`). When the leader has
        already finished (its first token ended it), a sibling takes the source slot itself, without a
        copy: a slot never copies from itself (llama.cpp ignores that copy, and the sibling would decode
        with no prompt at all). Siblings that find no slot read the prompt themselves later."""
        with self._wake:
            siblings = [job for job in self._queue if job.leader is leader]
        for job in siblings:
            spare = [slot for slot in self.slots if not slot.busy and slot is not source]
            take_source = not source.busy and (not spare or job is siblings[-1])
            if not take_source and not spare:
                return
            with self._wake:
                if job not in self._queue:
                    continue  # withdrawn meanwhile
                self._queue.remove(job)
            if job.generation.cancel.is_set():
                self.finished["cancelled"] += 1
                continue
            slot = source if take_source else next_to_busy(self._busy_sequences(), spare)
            if not take_source and not self._copy(source, slot, len(job.prompt)):
                self._assign(slot, job, 0)  # the copy did not take: it reads the prompt itself
                continue
            job.generation.cached_tokens = leader.generation.cached_tokens  # the request's prompt, read once
            self._assign(slot, job, len(job.prompt))
            job.send_prompt_logprobs(self._piece_text(job.prompt[0]), source=leader)
            self._sample(slot, row, gaps)

    def _copy(self, source: Slot, target: Slot, length: int) -> bool:
        """Copy the source's KV cells into the target; True if the target now holds positions
        0..length-1. Across KV streams llama.cpp moves the data at the next decode, so the source may
        not have a saved state written into it (`_restore`) before then."""
        self._forget(target, keep=0)
        llama_cpp.llama_memory_seq_cp(self.context.memory, source.seq_id, target.seq_id, -1, -1)
        self._copy_sources.add(source.seq_id)
        target.cached = list(source.cached[:length])
        if self._holds(target, length):
            return True
        log.warning("model %s: copying a prompt's KV cells did not take; the choice reads it again", self.name)
        self._forget(target, keep=0)
        return False

    def _assign(self, slot: Slot, job: Job, prefix: int) -> None:
        # Its logits stay on the device unless the host needs them.
        on_device = self.device is not None and self.device.use(slot.seq_id, self._device_chain(job))
        host_chain = not on_device and not is_plain_greedy(job.params, job.grammar)
        slot.assign(job, prefix, build_sampler(self.model, job.params, job.grammar) if host_chain else None,
                    self.n_ctx)
        slot.on_device = on_device
        job.generation.mark_started()

    def _device_chain(self, job: Job) -> DeviceChain | None:
        if job.logprobs is not None or job.prompt_logprobs is not None:
            return None  # read from the host's copy of the logits
        return device_chain(job.params, job.grammar, self.n_vocab, job.shares_first_row)

    def _step(self, active: list[Slot]) -> None:
        now = self.clock()
        for slot in active:
            if slot.job is not None and slot.job.generation.cancel.is_set():
                self._free(slot)
                self._finish(slot, "cancelled")
            elif slot.job is not None and slot.job.deadline is not None and now >= slot.job.deadline:
                self._finish(slot, "length")  # MAX_REQUEST_S: ends like a max_tokens cut, usage included
        active = [slot for slot in active if slot.busy and not self._saving.copying(slot.seq_id)]
        if not active:  # every busy sequence waits for its state's copy: nothing to decode until one ends
            self._saving.wait()
            return
        decoding = [slot for slot in active if slot.next_token is not None]
        prefilling = [slot for slot in active if slot.pending and slot.job is not None]
        if not self.deterministic:
            self._decode(decoding, prefilling)
            return
        # llama.cpp computes a sequence's rows differently when other sequences share the llama_decode
        # (it splits the batch into equal parts per sequence; attention spans the longest sequence's
        # cells): a deterministic model decodes each sequence, and each fixed prompt chunk, on its own.
        for slot in decoding:
            self._decode([slot], [])
        if prefilling:
            self._decode([], prefilling)

    def _decode(self, decoding: list[Slot], prefilling: list[Slot]) -> None:
        """One llama_decode: the next token of each of `decoding`, and prompt tokens of `prefilling`'s
        oldest; then sample every row that asked for logits."""
        prepared = self.clock()
        self.batch.reset()
        outputs: dict[int, Slot] = {}  # batch row → the slot whose next token it samples
        for slot in decoding:
            assert slot.next_token is not None
            outputs[self._add(slot.next_token, len(slot.cached), slot, logits=True)] = slot
            slot.cached.append(slot.next_token)
            slot.next_token = None
        decoded = tuple(slot.seq_id for slot in outputs.values())
        prefilled: dict[int, int] = {}
        scored: list[tuple[int, Slot]] = []  # rows of prompts that asked for their log probabilities
        if prefilling:  # the cost model is consulted only when a prompt waits
            allowance = self.fixed_chunk if self.deterministic else self.budget.prefill_allowance(len(decoded))
            prefilled = self._add_prefill(prefilling, outputs, allowance, scored)
        tokens = self.batch.n_tokens()
        if tokens == 0:
            return
        started = self.clock()
        self.context.decode(self.batch)
        decoded_at = self.clock()
        if self.device is not None:
            self.device.decoded()
        self._copy_sources.clear()  # the decode applied the copies made since the last one
        if self._restored:
            for seq_id in (*decoded, *prefilled):  # these sequences decoded past their restored states
                self._restored.pop(seq_id, None)
        self._score_prompts(scored)
        chosen = self.chains.sample(self.context, [(row, slot.sampler) for row, slot in outputs.items()
                                                   if slot.sampler is not None and slot.max_tokens > 0])
        gaps: list[float] = []
        for row, slot in outputs.items():
            job = slot.job
            assert job is not None  # a slot that decodes serves a request
            first = job.prefilling and not slot.pending  # this step read the last of its prompt
            if first:
                self._save_prefix(job, slot)  # before sampling can end the reply: a reader may then look
                job.send_prompt_logprobs(self._piece_text(job.prompt[0]))
            self._sample(slot, row, gaps, chosen.get(row))
            if first:
                job.prefilling = False
                self._admit_copies(job, slot, row, gaps)
        finished = self.clock()
        self.budget.record(tokens, finished - started, decoding=len(decoded))
        if not decoded and tokens >= MEASURED_PREFILL:  # what reading a prompt costs, to weigh restores by
            self.prefill_rate.record(tokens, decoded_at - started)
        if self.on_step is not None:
            host = (started - prepared) + (finished - decoded_at)
            self.on_step(StepRecord(seconds=finished - prepared, decoded=decoded, prefilled=prefilled,
                                    token_gaps=tuple(gaps), host_seconds=host))

    def _sample(self, slot: Slot, row: int, gaps: list[float], chosen: int | None = None) -> None:
        """Sample the slot's next token from the logits of batch row `row` (unless its chain has
        `chosen` it already), and hand it to the slot."""
        job = slot.job
        assert job is not None  # a decoding slot serves a request
        if slot.max_tokens <= 0:  # max_tokens 0: the prompt only (its log probabilities, with echo)
            self._finish(slot, "length")
            return
        token = self._choose(slot, row) if chosen is None else chosen
        now = self.clock()
        if slot.last_token_at is not None:
            gaps.append(now - slot.last_token_at)
        elif job.generation.first_token_at is None:
            job.generation.first_token_at = time.perf_counter()
        slot.last_token_at = now
        eog = self.pieces.ends_generation(token)
        piece = b"" if eog else self.pieces.piece(token, special=token in job.preserved)
        logprob = None
        if job.logprobs is not None and not eog:
            logprob = token_logprob(self.context.ctx, row, self.n_vocab, token, job.logprobs, self.pieces.piece)
        reason = slot.accept(token, piece, eog, logprob)
        if reason is not None:
            self._finish(slot, reason)

    def _choose(self, slot: Slot, row: int) -> int:
        """The slot's next token from batch row `row`: chosen on the device, by the host's argmax (plain
        greedy: the first largest logit, exactly as llama.cpp's greedy picks), or by its sampler chain."""
        if slot.on_device:
            assert self.device is not None  # only a model that samples on its device puts slots there
            return self.device.token(row)
        if slot.sampler is None:
            # A view made from the row's address: numpy's ctypes pointer conversion costs several times
            # more, once per sequence and token.
            logits = ctypes.addressof(llama_cpp.llama_get_logits_ith(self.context.ctx, row).contents)
            return int(np.frombuffer(self._logits_row.from_address(logits), dtype=np.float32).argmax())
        return slot.sampler.sample(self.context, row)

    def _add_prefill(self, prefilling: list[Slot], outputs: dict[int, Slot], allowance: int,
                     scored: list[tuple[int, Slot]]) -> dict[int, int]:
        """Put up to `allowance` prompt tokens into the batch, oldest prompt first; the last token of a
        prompt asks for logits (its first generated token comes from them). A burst of requests is read
        in a few steps, not one step per prompt. A sliding-window model (Gemma 3) takes one prompt per
        step: with two prompts' tokens in one llama_decode it computes the first differently than alone
        (tests/integration/engine/test_gemma.py), and a reply must not depend on who else arrived; so
        does a deterministic one (each prompt in its own fixed chunks). A prompt scored for its log
        probabilities asks for logits at every position, at most `SCORED_ROWS` a step for all of them."""
        waiting = sorted(prefilling, key=lambda slot: slot.job.arrived if slot.job else 0)
        prefilled: dict[int, int] = {}
        scored_rows = SCORED_ROWS  # for every scored prompt of the step together
        for slot in waiting[:1] if self.n_swa or self.deterministic else waiting:
            scoring = slot.job is not None and slot.job.prompt_logprobs is not None
            size = min(allowance, scored_rows) if scoring else allowance
            if size <= 0:
                continue
            chunk, slot.pending = slot.pending[:size], slot.pending[size:]
            for offset, token in enumerate(chunk):
                last = offset == len(chunk) - 1 and not slot.pending
                row = self._add(token, len(slot.cached), slot, logits=last or scoring)
                slot.cached.append(token)
                if scoring:
                    scored.append((row, slot))
                if last:
                    outputs[row] = slot
            prefilled[slot.seq_id], allowance = len(chunk), allowance - len(chunk)
            scored_rows -= len(chunk) if scoring else 0
        return prefilled

    def _score_prompts(self, scored: list[tuple[int, Slot]]) -> None:
        """Each scored row's logits give the log probability of the prompt token after it (the logits
        are overwritten by the next decode, so this runs right after this one)."""
        for row, slot in scored:
            job = slot.job
            assert job is not None and job.prompt_logprobs is not None  # only such jobs' rows are scored
            following = len(job.prompt_scored) + 1
            if following < len(job.prompt):
                job.prompt_scored.append(prompt_logprob(self.context.ctx, row, self.n_vocab, job.prompt[following],
                                                        job.prompt_logprobs, self.pieces.piece))

    def _piece_text(self, token: int) -> str:
        return self.pieces.piece(token).decode("utf-8", "replace")

    def _finish(self, slot: Slot, reason: FinishReason) -> None:
        self._saved_before_it_goes(slot)
        self.finished[reason] += 1
        slot.finish(reason)

    def _saved_before_it_goes(self, slot: Slot) -> None:
        """Wait for a copy of the slot's state under way, and deliver it: before its cells change, and
        before its reply ends (a saved prompt is in the store by then, as if copied at once)."""
        if self._saving.copying(slot.seq_id):
            self._saving.wait(slot.seq_id)
            self._hand_over_saved()

    def _add(self, token: int, position: int, slot: Slot, *, logits: bool) -> int:
        batch, row = self.batch.batch, self.batch.batch.n_tokens
        batch.token[row], batch.pos[row] = token, position
        batch.n_seq_id[row], batch.seq_id[row][0] = 1, slot.seq_id
        batch.logits[row] = logits
        batch.n_tokens = row + 1
        return row

    def _still_cached(self, slot: Slot, prefix: int) -> int:
        """`prefix` if the KV cache still holds what decoding after it needs, else 0."""
        return prefix if prefix > 0 and self._holds(slot, prefix) else 0

    def _holds(self, slot: Slot, length: int) -> bool:
        """Whether the sequence's cells cover positions 0..length-1 (llama.cpp guarantees every position
        between its min and max). A sliding-window cache (`swa_full = false`) drops cells more than a
        window behind the end, which decoding after `length` does not need; any other gap is a broken
        sequence, never reused."""
        memory = self.context.memory
        first = llama_cpp.llama_memory_seq_pos_min(memory, slot.seq_id)
        last = llama_cpp.llama_memory_seq_pos_max(memory, slot.seq_id)
        oldest_needed = max(0, length - self.n_swa) if self.n_swa else 0
        return 0 <= first <= oldest_needed and last >= length - 1

    def _forget(self, slot: Slot, keep: int) -> int:
        """Drop the slot's KV cells from position `keep` on; returns how many it still holds. Recurrent
        and hybrid models cannot drop part of a sequence: then all of it goes. A copy of its state under
        way ends first."""
        self._saved_before_it_goes(slot)
        if not llama_cpp.llama_memory_seq_rm(self.context.memory, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(self.context.memory, slot.seq_id, -1, -1)
            keep = 0
        del slot.cached[keep:]
        return keep

    def _free(self, slot: Slot) -> None:
        self._forget(slot, keep=0)

    def _release_everything(self) -> None:
        for slot in self.slots:
            if slot.busy:
                self._finish(slot, "cancelled")
        with self._wake:  # requests may still be joining from the loop: the line is taken under its lock
            waiting = list(self._queue)
            self._queue.clear()
        for job in waiting:
            job.generation.refuse(self._unloaded())
        with self._users:  # no other thread may be reading the vocabulary as it goes
            self._freed = True
            self._users.wait_for(lambda: self._using == 0, timeout=USERS_WAIT_S)
        self._saving.close()  # a copy still reading the context ends before the context goes
        self.batch.close()
        self.context.close()
        if self.device is not None:
            self.device.free()
        self.threads.free()
        self.chains.close()
        self.model.close()


def _readable(state: State) -> Any:
    """The state's own memory as llama.cpp's `const uint8_t *`, not a copy (llama.cpp only reads it; a
    state is hundreds of MB for a large model, and a restore runs while every stream waits)."""
    if isinstance(state, bytearray):
        return (ctypes.c_uint8 * len(state)).from_buffer(state)
    return ctypes.cast(ctypes.c_char_p(state), ctypes.POINTER(ctypes.c_uint8))


def _token_text(model: LlamaModel, token: int) -> str:
    return model.token_get_text(token) if token >= 0 else ""


FLASH_ATTENTION = {None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                   False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def context_params(options: ModelOptions) -> Any:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = options.n_ctx * options.n_parallel
    params.n_batch = options.n_batch
    params.n_ubatch = options.micro_batch
    params.n_seq_max = options.n_parallel
    params.n_threads = params.n_threads_batch = options.n_threads
    # One KV stream per sequence: attention then runs over a sequence's own cells only, so its
    # arithmetic (and its greedy output) does not change with whatever else shares the batch.
    params.kv_unified = False
    params.swa_full = options.swa_full
    params.no_perf = True
    if device_sampling.wanted(options):
        device_sampling.limit_outputs(params, options.n_parallel, SCORED_ROWS)
    # Flash attention is llama.cpp's choice unless the manifest says on or off: it turns it on wherever every
    # attention op can run on the KV cache's device (on CPU it decodes ~10% faster here, and outputs still do
    # not depend on batching: tests/integration/engine).
    params.flash_attn_type = FLASH_ATTENTION[options.flash_attn]
    if options.rope_freq_base is not None:
        params.rope_freq_base = options.rope_freq_base
    if options.rope_freq_scale is not None:
        params.rope_freq_scale = options.rope_freq_scale
    return params
