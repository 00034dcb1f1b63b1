"""Greedy sampling in llama.cpp's compute graph (its backend samplers): where the output layer runs on
a GPU, a greedy sequence's token is chosen there, and neither its 151,936 logits nor the host's argmax
over them cross to the host any more. On a CPU it is slower, not faster (this llama.cpp pads a copy of
every logits row and runs ggml's single-threaded argmax per sequence; README "Per-token host work"),
so `device_sampling` defaults to on only when every layer is offloaded to a CUDA GPU (see
`DEFAULT_BACKENDS`).

A sequence keeps its sampler between greedy requests: attaching or detaching one makes llama.cpp
re-plan its compute graph, so that happens only when a slot changes between greedy and a request that
needs its logits on the host (seeded sampling, grammars, penalties, bias, log probabilities). Each
attachment is a chain of its own: llama.cpp sets a chain up on the backend once only (attaching the same
chain again aborts the process), and a detached chain is freed only after the next decode, once the
graph that used it has been replaced."""

from __future__ import annotations

from typing import Any

import llama_cpp

from handler.engine import devices
from handler.engine.llama_options import ModelOptions

# The GPU backends where greedy requests are sampled on the device unless the manifest says otherwise:
# CUDA, where it is meant to pay. On Vulkan, llama.cpp's backend samplers corrupted the process's heap
# here (Mesa's software device, `just test-vulkan`: a prompt read while sequences with samplers attached
# sat idle, about one run in two; never with device sampling off), so there the manifest turns it on.
DEFAULT_BACKENDS = frozenset({"CUDA"})


def wanted(options: ModelOptions) -> bool:
    """Whether a model samples greedy sequences on its device: the manifest's `device_sampling`, else
    on exactly when all its layers (the output layer with them) run on GPUs of `DEFAULT_BACKENDS`."""
    if options.device_sampling is not None:
        return options.device_sampling
    return (options.n_gpu_layers == devices.ALL_LAYERS and devices.has_gpu()
            and devices.gpu_backends() <= DEFAULT_BACKENDS)


def limit_outputs(params: Any, n_parallel: int, scored_rows: int) -> None:
    """Backend samplers make llama.cpp size its sampling buffers by the most outputs a step may have
    (n_batch unless told): a vocabulary's worth of floats per row. A step here has one output per
    decoding sequence, one per prompt that ends in it, and the rows of a scored prompt."""
    params.n_outputs_max = 2 * n_parallel + scored_rows


class DeviceGreedy:
    """A greedy sampler chain for each sequence of a context that serves plain greedy requests now."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._chains: dict[int, Any] = {}  # by sequence: attached
        self._detached: list[Any] = []  # still in the graph of the last decode

    @staticmethod
    def _greedy_chain() -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain

    def use(self, seq_id: int, on_device: bool) -> bool:
        """Sample `seq_id` on the device (or not) from its next decode; True if it is."""
        if on_device == (seq_id in self._chains):
            return on_device
        if not on_device:
            llama_cpp.llama_set_sampler(self._context, seq_id, None)
            self._detached.append(self._chains.pop(seq_id))
            return False
        chain = self._greedy_chain()
        if not llama_cpp.llama_set_sampler(self._context, seq_id, chain):
            llama_cpp.llama_sampler_free(chain)  # the backend cannot run it: the host samples this sequence
            return False
        self._chains[seq_id] = chain
        return True

    def decoded(self) -> None:
        """After a decode: the chains detached before it are in no graph any more."""
        for chain in self._detached:
            llama_cpp.llama_sampler_free(chain)
        self._detached.clear()

    def token(self, row: int) -> int:
        """The token the device chose from batch row `row` at the last decode."""
        return int(llama_cpp.llama_get_sampled_token_ith(self._context, row))

    def free(self) -> None:
        """After the context is freed (it holds the attached chains while it lives)."""
        for chain in [*self._chains.values(), *self._detached]:
            llama_cpp.llama_sampler_free(chain)
        self._chains, self._detached = {}, []
