"""Token id → the bytes it stands for.

llama-cpp-python's `LlamaModel.detokenize` reads each piece into a fixed 32-byte buffer and loses
any longer piece (a run of 64 dashes, a newline plus deep indentation: the Qwen3 vocabulary has
hundreds). llama.cpp answers a too-small buffer with minus the size it needs, so grow and ask again.
"""

from __future__ import annotations

import ctypes

import llama_cpp


class PieceReader:
    """Reads token pieces with one reusable buffer, each token's once (a vocabulary's pieces never
    change, and a reply repeats many); for one thread (a model's scheduler)."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, size: int = 64) -> None:
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(size)
        self._read: dict[tuple[int, bool], bytes] = {}
        self._ends: dict[int, bool] = {}

    def piece(self, token: int, *, special: bool = False) -> bytes:
        key = (token, special)
        if (known := self._read.get(key)) is None:
            known = self._read[key] = self._piece(token, special)
        return known

    def ends_generation(self, token: int) -> bool:
        """Whether `token` ends a generation (end of turn, end of text: llama.cpp's EOG set)."""
        if (known := self._ends.get(token)) is None:
            known = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return known

    def _piece(self, token: int, special: bool) -> bytes:
        for _ in range(2):  # the second call has the size llama.cpp asked for
            size = len(self._buffer)
            written = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, size, 0, special)
            if written >= 0:
                return self._buffer.raw[:written]
            self._buffer = ctypes.create_string_buffer(-written)
        raise RuntimeError(f"llama.cpp kept asking for a larger buffer for token {token}")


def detokenize(vocab: llama_cpp.llama_vocab_p, tokens: list[int]) -> str:
    """The text of `tokens`, special tokens included (blocking; any thread: its own buffer)."""
    reader = PieceReader(vocab)
    return b"".join(reader.piece(token, special=True) for token in tokens).decode("utf-8", errors="replace")
