"""Greedy sampling in llama.cpp's compute graph (its backend samplers): where the output layer runs on
a GPU, a greedy sequence's token is chosen there, and neither its 151,936 logits nor the host's argmax
over them cross to the host any more. On a CPU it is slower, not faster (this llama.cpp pads a copy of
every logits row and runs ggml's single-threaded argmax per sequence; README "Per-token host work"),
so `device_sampling` defaults to on only when every layer is offloaded to a GPU.

A sequence keeps its sampler between greedy requests: attaching or detaching one makes llama.cpp
re-plan its compute graph, so that happens only when a slot changes between greedy and a request that
needs its logits on the host (seeded sampling, grammars, penalties, bias, log probabilities)."""

from __future__ import annotations

from typing import Any

import llama_cpp

from handler.engine import devices
from handler.engine.llama_options import ModelOptions


def wanted(options: ModelOptions) -> bool:
    """Whether a model samples greedy sequences on its device: the manifest's `device_sampling`, else
    on exactly when all its layers (the output layer with them) run on a GPU."""
    if options.device_sampling is not None:
        return options.device_sampling
    return options.n_gpu_layers == devices.ALL_LAYERS and devices.has_gpu()


def limit_outputs(params: Any, n_parallel: int, scored_rows: int) -> None:
    """Backend samplers make llama.cpp size its sampling buffers by the most outputs a step may have
    (n_batch unless told): a vocabulary's worth of floats per row. A step here has one output per
    decoding sequence, one per prompt that ends in it, and the rows of a scored prompt."""
    params.n_outputs_max = 2 * n_parallel + scored_rows


class DeviceGreedy:
    """One greedy sampler chain per sequence of a context, attached while the sequence serves plain
    greedy requests."""

    def __init__(self, context: Any, n_parallel: int) -> None:
        self._context = context
        self._chains = [self._greedy_chain() for _ in range(n_parallel)]
        self._attached: set[int] = set()

    @staticmethod
    def _greedy_chain() -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain

    def use(self, seq_id: int, on_device: bool) -> bool:
        """Sample `seq_id` on the device (or not) from its next decode; True if it is."""
        if on_device == (seq_id in self._attached):
            return on_device
        chain = self._chains[seq_id] if on_device else None
        if not llama_cpp.llama_set_sampler(self._context, seq_id, chain) and on_device:
            return False  # the backend cannot run it: the host samples this sequence
        if on_device:
            self._attached.add(seq_id)
        else:
            self._attached.discard(seq_id)
        return on_device

    def token(self, row: int) -> int:
        """The token the device chose from batch row `row` at the last decode."""
        return int(llama_cpp.llama_get_sampled_token_ith(self._context, row))

    def free(self) -> None:
        """After the context is freed (it holds the chains while it lives)."""
        for chain in self._chains:
            llama_cpp.llama_sampler_free(chain)
        self._chains, self._attached = [], set()

