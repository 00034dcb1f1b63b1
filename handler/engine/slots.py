"""One sequence slot of the batching engine: the request it serves, what its KV cache holds, and how
its sampled tokens become text (UTF-8 split across tokens, stop strings, limits)."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Collection, Sequence

import attrs
from llama_cpp._internals import LlamaSampler
from llama_cpp.llama_grammar import LlamaGrammar

from handler.engine.generation import Generation
from handler.engine.logprobs import LogprobQueue
from handler.engine.text import StopMatcher
from handler.engine.types import FinishReason, PromptLogprobs, SamplingParams, TextChunk, TokenLogprob
from handler.store.prefix_ram import common_length
from handler.store.prefixes import SavedPrefix

_ARRIVALS = itertools.count()
_ASSIGNMENTS = itertools.count(1)
# A shared prefix this long (a system prompt, a tool list) is worth taking a slot for even when that
# evicts the rest of another conversation: reading it again costs seconds on a CPU.
LONG_SHARED_PREFIX = 256


@attrs.define(eq=False)
class Submission:
    """The jobs of one request (its prompts times its choices). They wait in the line as one request;
    once one of them has a slot the request is being served, and the rest follow in turn."""

    serving: bool = False  # set by the scheduler, under the line's lock, when a job of it gets a slot


@attrs.define(eq=False)
class Job:
    prompt: list[int]
    params: SamplingParams
    grammar: LlamaGrammar | None
    generation: Generation
    submission: Submission = attrs.field(factory=Submission)
    preserved: frozenset[int] = frozenset()  # special tokens rendered as text (a format's markers)
    logprobs: int | None = None  # None: no log probabilities; k: the chosen token's and the top k
    prompt_logprobs: int | None = None  # None: none; k: each prompt token's and its top k (echo)
    prompt_scored: list[TokenLogprob] = attrs.field(factory=list)  # those read so far
    arrived: int = attrs.field(factory=lambda: next(_ARRIVALS))  # prefill goes oldest first
    leader: Job | None = None  # another choice of the same request, whose prompt this one copies
    shares_first_row: bool = False  # one of several choices of a prompt: all sample the leader's first logits row
    deadline: float | None = None  # on the engine's clock: past it, the generation ends as "length"
    tenant: str = ""  # whose prompt it is: a KV state is reused only within one tenant
    saved: SavedPrefix | None = None  # a prefix of the prompt whose KV state the volume had
    looking_up: bool = False  # in the line while its saved prefix is looked up: not admitted yet
    admitted: bool = False  # has had a slot
    prefilling: bool = False  # in a slot, its prompt not read yet

    def send_prompt_logprobs(self, first: str, source: Job | None = None) -> None:
        """Hand the prompt's log probabilities (this job's, or the leader's it copied) to the reader."""
        if self.prompt_logprobs is not None:
            entries = (source or self).prompt_scored
            self.generation.emit(TextChunk(prompt_logprobs=PromptLogprobs(first, tuple(entries))))

    @property
    def waits(self) -> bool:
        """Not to be admitted yet: its saved prefix is being looked up, or it is a sibling choice whose
        leader still reads the shared prompt (it copies it then)."""
        leader = self.leader
        if self.looking_up:
            return True
        return (leader is not None and not leader.generation.cancel.is_set()
                and (leader.prefilling or not leader.admitted))


@attrs.define(eq=False)
class Slot:
    seq_id: int
    cached: list[int] = attrs.field(factory=list)  # tokens whose KV this sequence holds, in order
    tenant: str = ""  # whose prompt those tokens are
    job: Job | None = None
    sampler: LlamaSampler | None = None  # None while serving: plain greedy, picked by the engine itself
    on_device: bool = False  # sampled in llama.cpp's graph (engine.device_sampling)
    pending: list[int] = attrs.field(factory=list)  # prompt tokens still to prefill
    next_token: int | None = None  # sampled, not yet decoded
    last_token_at: float | None = None  # when the previous token was sampled (inter-token gaps)
    produced: int = 0
    max_tokens: int = 0
    stop_hit: str | None = None  # the stop string that ended the reply
    stops: StopMatcher = attrs.field(factory=lambda: StopMatcher(()))
    decoder: codecs.IncrementalDecoder = attrs.field(factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    logprobs: LogprobQueue = attrs.field(factory=LogprobQueue)
    last_assigned: int = 0  # order of the slot's latest assignment (0: never used)

    @property
    def busy(self) -> bool:
        return self.job is not None

    def reusable_prefix(self, prompt: Sequence[int], tenant: str = "") -> int:
        """How many leading prompt tokens this slot's KV cache already holds for this tenant (at least
        one token is always left to decode, since its logits are needed). Another tenant's cells are
        never reused, so a prompt's timing says nothing about what others asked."""
        if tenant != self.tenant:
            return 0
        return min(common_length(self.cached, prompt), len(prompt) - 1)

    def assign(self, job: Job, prefix: int, sampler: LlamaSampler | None, n_ctx: int) -> None:
        self.job, self.sampler, self.last_token_at = job, sampler, None
        self.tenant = job.tenant
        self.last_assigned = next(_ASSIGNMENTS)
        job.admitted, job.prefilling = True, prefix < len(job.prompt)
        del self.cached[prefix:]
        self.pending = job.prompt[prefix:]
        self.next_token, self.produced, self.stop_hit = None, 0, None
        self.max_tokens = min(job.params.max_tokens, n_ctx - len(job.prompt))
        self.stops = StopMatcher(job.params.stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.logprobs = LogprobQueue()

    def read_again_from(self, held: int) -> None:
        """The sequence holds only its job's first `held` prompt tokens after all (`cached` already says
        so): read the rest."""
        if self.job is not None:
            self.pending = self.job.prompt[held:]
            self.job.generation.cached_tokens = held

    def accept(self, token: int, piece: bytes, end_of_generation: bool,
               logprob: TokenLogprob | None = None) -> FinishReason | None:
        """Take a sampled token (with its log probabilities, if asked for); returns why the generation
        ends, if it does."""
        job = self.job
        assert job is not None
        if end_of_generation:
            return "stop"
        self.produced += 1
        decoded = self.decoder.decode(piece)
        if logprob is not None:
            self.logprobs.add(attrs.evolve(logprob, text=decoded))
        text, hit = self.stops.push(decoded)
        if hit is not None:
            self.stop_hit = hit
            job.generation.emit(TextChunk(text=text, logprobs=self.logprobs.cut(text)))
            return "stop"
        if text:
            job.generation.emit(TextChunk(text=text, logprobs=self.logprobs.take(text)))
        if self.produced >= self.max_tokens:
            return "length"
        self.next_token = token
        return None

    def finish(self, reason: FinishReason) -> None:
        job = self.job
        assert job is not None
        if reason != "cancelled" and self.stop_hit is None:  # text held back for a stop string that never came
            tail, _ = self.stops.push(self.decoder.decode(b"", final=True))
            tail += self.stops.flush()
            if entries := self.logprobs.cut(tail):
                job.generation.emit(TextChunk(text=tail, logprobs=entries))
            elif tail:
                job.generation.emit(TextChunk(text=tail))
        job.generation.emit(TextChunk(finish_reason=reason, prompt_tokens=len(job.prompt),
                                      completion_tokens=self.produced, stop_sequence=self.stop_hit))
        job.prefilling = False
        self.job, self.sampler, self.next_token, self.pending = None, None, None, []

    def fail(self, error: BaseException) -> None:
        if self.job is not None:
            self.job.generation.emit(error)
            self.job.prefilling = False
        self.job, self.sampler, self.next_token, self.pending = None, None, None, []
        self.cached.clear()


def choose_slot(free: Sequence[Slot], prompt: Sequence[int], tenant: str = "",
                busy: Collection[int] = ()) -> tuple[Slot, int]:
    """The free slot a prompt should take, and how many of its leading tokens that slot holds: the slot it
    continues (it reuses at least half of what the slot holds, or a long shared prefix), else one
    `next_to_busy` slots, the least recently used among equals, so a new conversation does not
    overwrite another one that shares only a short system prompt with it."""
    reusable = {slot.seq_id: slot.reusable_prefix(prompt, tenant) for slot in free}
    best = max(free, key=lambda slot: reusable[slot.seq_id])
    reused = reusable[best.seq_id]
    if reused and (2 * reused >= len(best.cached) or reused >= LONG_SHARED_PREFIX):
        return best, reused
    chosen = next_to_busy(busy, free)
    return chosen, reusable[chosen.seq_id]


def next_to_busy(busy: Collection[int], free: Sequence[Slot]) -> Slot:
    """The free slot that leaves the busy sequences in the fewest runs of consecutive ids: one between two
    busy ones, else one beside a busy one (the least recently used among equals). With a KV stream per
    sequence, llama.cpp splits a step into one compute of the whole model for each run of consecutive
    sequence ids the batch lists in order (`split_equal`, sequential): 16 sequences spread over 64 slots
    took up to 16 passes over the weights a step, 12 ms where slots 0–15 took 5.7 (tiny model, this CPU)."""
    taken = frozenset(busy)

    def new_runs(slot: Slot) -> int:
        return 1 - (slot.seq_id - 1 in taken) - (slot.seq_id + 1 in taken)

    return min(free, key=lambda slot: (new_runs(slot), slot.last_assigned))
