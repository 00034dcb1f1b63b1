"""Reading GGUF metadata without loading weights (vocab-only), to choose load options first."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp


def read_metadata_values(path: Path, keys: list[str]) -> dict[str, str]:
    """The string values of `keys` present in the GGUF at `path`; `{arch}` in a key is filled in."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ValueError(f"{path.name} is not a readable GGUF file")
    try:
        found: dict[str, str] = {}
        buffer = ctypes.create_string_buffer(256)
        arch = _value(model, "general.architecture", buffer) or ""
        for key in keys:
            value = _value(model, key.replace("{arch}", arch), buffer)
            if value is not None:
                found[key] = value
        return found
    finally:
        llama_cpp.llama_model_free(model)


def _value(model: llama_cpp.llama_model_p, key: str, buffer: ctypes.Array) -> str | None:
    length = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, ctypes.sizeof(buffer))
    return buffer.value.decode("utf-8", "replace") if length >= 0 else None
