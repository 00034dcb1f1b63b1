"""Token pieces and the end-of-generation set, read once per token and remembered: the same answers
as llama.cpp gives each time (special pieces apart from plain ones, long pieces whole)."""

from __future__ import annotations

import llama_cpp
from llama_cpp import Llama

from handler.engine.pieces import PieceReader


def test_remembered_pieces_and_ends_are_llama_cpps(demo_model_path):
    vocab_only = Llama(str(demo_model_path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(vocab_only.model)
    reader, tokens = PieceReader(vocab, size=4), range(vocab_only.n_vocab())  # a small buffer grows for long pieces
    for _ in range(2):  # the second pass answers from memory
        for token in tokens:
            for special in (False, True):
                assert reader.piece(token, special=special) == PieceReader(vocab)._piece(token, special)
            assert reader.ends_generation(token) == bool(llama_cpp.llama_vocab_is_eog(vocab, token))
    assert any(reader.ends_generation(token) for token in tokens)
    assert reader.piece(vocab_only.token_eos(), special=True) != reader.piece(vocab_only.token_eos())
