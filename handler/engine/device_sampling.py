"""Sampling in llama.cpp's compute graph (its backend samplers): where the output layer runs on a GPU,
a sequence's token is chosen there — a greedy pick, or the API's default unseeded draw through top-k,
top-p, min-p and temperature — and neither its 151,936 logits nor the host's work over them cross to
the host any more. On a CPU it is slower, not faster (this llama.cpp pads a copy of every logits row
and runs ggml's single-threaded ops per sequence; README "Per-token host work"), so `device_sampling`
defaults to on only when every layer is offloaded to a CUDA GPU (see `DEFAULT_BACKENDS`).

A sequence keeps its chain while its requests want the same one: attaching or detaching one makes
llama.cpp re-plan its compute graph, so that happens only when a slot changes between kinds of request
(greedy, a draw with other settings, or one that needs its logits on the host: seeded sampling,
grammars, penalties, bias, log probabilities). Each attachment is a chain of its own: llama.cpp sets a
chain up on the backend once only (attaching the same chain again aborts the process), and a detached
chain is freed only after the next decode, once the graph that used it has been replaced."""

from __future__ import annotations

import random
from typing import Any

import llama_cpp

from handler.engine import devices, llama_log
from handler.engine.llama_options import ModelOptions
from handler.engine.sampling import GREEDY, DeviceChain

# The GPU backends where requests are sampled on the device unless the manifest says otherwise:
# CUDA, where it is meant to pay. On Vulkan, llama.cpp's backend samplers corrupted the process's heap
# here (Mesa's software device, `just test-vulkan`: a prompt read while sequences with samplers attached
# sat idle, about one run in two; never with device sampling off), so there the manifest turns it on.
DEFAULT_BACKENDS = frozenset({"CUDA"})
_UNSUPPORTED = "does not have support for op"  # llama.cpp's warning when a sampler cannot run on the device


def wanted(options: ModelOptions) -> bool:
    """Whether a model samples greedy sequences on its device: the manifest's `device_sampling`, else
    on exactly when all its layers (the output layer with them) run on GPUs of `DEFAULT_BACKENDS`."""
    if options.device_sampling is not None:
        return options.device_sampling
    return (options.n_gpu_layers == devices.ALL_LAYERS and devices.has_gpu()
            and devices.gpu_backends() <= DEFAULT_BACKENDS)


def _llama_chain(wanted: DeviceChain) -> Any:
    """llama.cpp's sampler chain for `wanted`, in the host chain's order (sampling.build_sampler)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if wanted == GREEDY:
        samplers = [llama_cpp.llama_sampler_init_greedy()]
    else:
        samplers = [*([llama_cpp.llama_sampler_init_top_k(wanted.top_k)] if wanted.top_k else []),
                    *([llama_cpp.llama_sampler_init_top_p(wanted.top_p, 1)] if wanted.top_p < 1 else []),
                    *([llama_cpp.llama_sampler_init_min_p(wanted.min_p, 1)] if wanted.min_p > 0 else []),
                    llama_cpp.llama_sampler_init_temp(wanted.temperature),
                    llama_cpp.llama_sampler_init_dist(random.getrandbits(32))]
    for sampler in samplers:
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def limit_outputs(params: Any, n_parallel: int, scored_rows: int) -> None:
    """Backend samplers make llama.cpp size its sampling buffers by the most outputs a step may have
    (n_batch unless told): a vocabulary's worth of floats per row. A step here has one output per
    decoding sequence, one per prompt that ends in it, and the rows of a scored prompt."""
    params.n_outputs_max = 2 * n_parallel + scored_rows


class DeviceSamplers:
    """A sampler chain in the graph for each sequence of a context whose request the device can sample
    (`sampling.device_chain`); the rest have none, and the host samples them from their logits."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._chains: dict[int, tuple[DeviceChain, Any]] = {}  # by sequence: what it does, the attached chain
        self._detached: list[Any] = []  # still in the graph of the last decode

    def use(self, seq_id: int, wanted: DeviceChain | None) -> bool:
        """Sample `seq_id` on the device with `wanted` (None: on the host) from its next decode; True if
        the device samples it. A sequence keeps its chain while its requests want the same one."""
        attached = self._chains.get(seq_id)
        if attached is not None and attached[0] == wanted:
            return True
        if attached is not None:
            llama_cpp.llama_set_sampler(self._context, seq_id, None)
            self._detached.append(self._chains.pop(seq_id)[1])
        if wanted is None:
            return False
        chain = _llama_chain(wanted)
        llama_log.take_messages()
        attached_now = llama_cpp.llama_set_sampler(self._context, seq_id, chain)
        # llama.cpp attaches a chain whose samplers the device cannot all run, and warns: it would then
        # choose no token there. The host samples such a sequence.
        if attached_now and any(_UNSUPPORTED in message for message in llama_log.take_messages()):
            llama_cpp.llama_set_sampler(self._context, seq_id, None)
            self._detached.append(chain)
            return False
        if not attached_now:
            llama_cpp.llama_sampler_free(chain)
            return False
        self._chains[seq_id] = (wanted, chain)
        return True

    def decoded(self) -> None:
        """After a decode: the chains detached before it are in no graph any more."""
        for chain in self._detached:
            llama_cpp.llama_sampler_free(chain)
        self._detached.clear()

    def token(self, row: int) -> int:
        """The token the device chose from batch row `row` at the last decode."""
        token = int(llama_cpp.llama_get_sampled_token_ith(self._context, row))
        if token < 0:  # the device chose none (LLAMA_TOKEN_NULL): fails the step's requests, not the process
            raise RuntimeError(f"llama.cpp's device sampler chose no token for batch row {row}")
        return token

    def free(self) -> None:
        """After the context is freed (it holds the attached chains while it lives)."""
        for chain in [*(chain for _, chain in self._chains.values()), *self._detached]:
            llama_cpp.llama_sampler_free(chain)
        self._chains, self._detached = {}, []
