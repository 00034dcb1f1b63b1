"""Facts about the demo model's vocabulary, read from the GGUF itself (vocab only, no weights)."""

from __future__ import annotations

import functools

from llama_cpp import Llama

from tests.conftest import DEMO_FILE, demo_model_dir


@functools.cache
def _vocab() -> Llama:
    return Llama(str(demo_model_dir() / DEMO_FILE), vocab_only=True, verbose=False)


def tokenize(text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
    return _vocab().tokenize(text.encode(), add_bos=add_bos, special=special)


def end_of_turn_bias() -> dict[str, int]:
    """A logit_bias that keeps the model from ending its turn, so a reply runs to max_tokens."""
    return {str(token): -100 for token in tokenize("<|im_end|>", special=True) + [_vocab().token_eos()]}


def chat_template() -> str:
    """The chat template the demo model's GGUF carries."""
    return _vocab().metadata["tokenizer.chat_template"]
