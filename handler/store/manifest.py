"""`models_manifest`: the declared models, parsed into `ModelSpec`s.

Format (TOML):

    [[models]]
    name = "smollm2-135m"       # the id clients send as `model`
    kind = "chat"               # "chat" or "embedding"
    source = "file.gguf"        # relative to MODEL_DIR, absolute, or s3://bucket/key
    sha256 = "…"                # optional, checked when the file is synced
    size = 98362432             # optional, bytes
    version_id = "…"            # optional, pins an S3 object version
    warm = true                 # optional: sync and load in the background at start
    ttl_s = 600                 # optional: unload after this long idle (0 = never)
    warm_prompts = ["You are…", { file = "agent.json" }]   # optional, warm models: prefixes read at warm-up
    [models.options]            # llama.cpp options overriding the environment defaults
    n_ctx = 2048
    chat_format = "qwen3"       # see handler.formats.registry
    chat_template = "x.jinja"   # a Jinja file (relative to the manifest) or inline template text
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import attrs

from handler.formats.gguf_template import TemplateRenderError, compile_template
from handler.formats.registry import CHAT_FORMATS
from handler.store.names import is_valid_model_name

ModelKind = Literal["chat", "embedding"]
KINDS: tuple[ModelKind, ...] = ("chat", "embedding")

# Options a manifest may set per model, with the type each must have.
LLAMA_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "n_ctx": int, "n_batch": int, "n_ubatch": int, "n_threads": int, "n_gpu_layers": int,
    "main_gpu": int, "flash_attn": bool, "use_mmap": bool, "use_mlock": bool, "repack": bool, "swa_full": bool,
    "deterministic": bool, "device_sampling": bool,
    "rope_freq_base": (int, float), "rope_freq_scale": (int, float), "seed": int,
    "pooling": str, "chat_format": str, "chat_template": str, "n_parallel": int,
}
POOLING_NAMES = ("none", "mean", "cls", "last", "rank")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The key's last segment becomes the local file name: it must be a plain `NAME.gguf`.
_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,62}/(?:[^\x00]*/)?[^/\x00.][^/\x00]*\.gguf")


class ManifestError(ValueError):
    """The manifest cannot be used as written; the message says which entry and field."""


@attrs.frozen
class ModelSpec:
    name: str
    kind: ModelKind
    source: str
    sha256: str | None = None
    size: int | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    version_id: str | None = None  # pin an S3 object version
    warm: bool = False  # synced and loaded in the background at start
    ttl_s: float | None = None  # unload after this long idle (0: never; None: the server default)
    declared: bool = True  # False for files found in MODEL_DIR without a manifest entry
    # Chat request bodies (without `model`) whose prompts warm-up reads before readiness, so their KV
    # state is in a slot and, with KV_CACHE_MB, on the volume for the next process.
    warm_prompts: tuple[dict[str, Any], ...] = ()

    @property
    def is_remote(self) -> bool:
        return self.source.startswith("s3://")

    @property
    def chat_format(self) -> str | None:
        return self.options.get("chat_format")


def _check_options(where: str, options: Any) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise ManifestError(f"{where}: options must be a table")
    for key, value in options.items():
        expected = LLAMA_OPTIONS.get(key)
        if expected is None:
            raise ManifestError(f"{where}: unknown option {key!r} (known: {', '.join(sorted(LLAMA_OPTIONS))})")
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            raise ManifestError(f"{where}: option {key!r} has the wrong type")
    if options.get("pooling", "mean") not in POOLING_NAMES:
        raise ManifestError(f"{where}: pooling must be one of {', '.join(POOLING_NAMES)}")
    if options.get("chat_format", "qwen3") not in CHAT_FORMATS:
        raise ManifestError(f"{where}: chat_format must be one of {', '.join(CHAT_FORMATS)}")
    return dict(options)


def _is_inline_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _read_template(where: str, value: str, base_dir: Path | None) -> str:
    """`chat_template`: inline Jinja text, or a file relative to the manifest; compiled (in the
    sandbox) now, so a broken template is refused at start, not on the first request."""
    text = value
    if not _is_inline_template(value):
        path = (base_dir or Path.cwd()) / value
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: chat_template file {str(path)!r} cannot be read: {exc}") from None
    try:
        compile_template(text)
    except TemplateRenderError as exc:
        raise ManifestError(f"{where}: chat_template: {exc}") from None
    return text


def _warm_prompt(where: str, value: Any, base_dir: Path | None) -> dict[str, Any]:
    """A text is a system prompt; `{ file = "…" }` is a file relative to the manifest: a `.json` file
    holds a chat request body (messages, tools, …), any other file a system prompt."""
    if isinstance(value, str) and value.strip():
        return {"messages": [{"role": "system", "content": value}]}
    if not (isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str)):
        raise ManifestError(f"{where}: each warm prompt is a text or {{ file = \"path\" }}")
    path = (base_dir or Path.cwd()) / value["file"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: warm prompt file {str(path)!r} cannot be read: {exc}") from None
    if path.suffix != ".json":
        return {"messages": [{"role": "system", "content": text}]}
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{where}: warm prompt file {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ManifestError(f"{where}: warm prompt file {str(path)!r} must be a chat request body with messages")
    return body


def _warm_prompts(where: str, entry: dict[str, Any], kind: ModelKind,
                  base_dir: Path | None) -> tuple[dict[str, Any], ...]:
    prompts = entry.get("warm_prompts", [])
    if not isinstance(prompts, list):
        raise ManifestError(f"{where}: warm_prompts must be a list")
    if prompts and kind != "chat":
        raise ManifestError(f"{where}: warm_prompts are for chat models")
    return tuple(_warm_prompt(f"{where}: warm_prompts[{i}]", value, base_dir) for i, value in enumerate(prompts))


def _parse_entry(index: int, entry: Any, base_dir: Path | None) -> ModelSpec:
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: must be a table")
    unknown = set(entry) - {"name", "kind", "source", "sha256", "size", "version_id", "warm", "ttl_s", "options",
                            "warm_prompts"}
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name, kind, source = entry.get("name"), entry.get("kind", "chat"), entry.get("source")
    if not isinstance(name, str) or not is_valid_model_name(name):
        raise ManifestError(f"{where}: name {name!r} is not a valid model id (letters, digits, . _ : + @ -)")
    if kind not in KINDS:
        raise ManifestError(f"{where} ({name}): kind must be 'chat' or 'embedding'")
    if not isinstance(source, str) or not source or "\x00" in source:
        raise ManifestError(f"{where} ({name}): source must be a path or an s3:// URL")
    sha256, size = entry.get("sha256"), entry.get("size")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower())):
        raise ManifestError(f"{where} ({name}): sha256 must be 64 hex digits")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ManifestError(f"{where} ({name}): size must be a positive integer")
    version_id = entry.get("version_id")
    if version_id is not None and not isinstance(version_id, str):
        raise ManifestError(f"{where} ({name}): version_id must be a string")
    if source.startswith("s3://") and not _S3_URL.fullmatch(source):
        raise ManifestError(f"{where} ({name}): source must look like s3://bucket/key.gguf")
    warm, ttl_s = entry.get("warm", False), entry.get("ttl_s")
    if not isinstance(warm, bool):
        raise ManifestError(f"{where} ({name}): warm must be true or false")
    if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or ttl_s < 0):
        raise ManifestError(f"{where} ({name}): ttl_s must be a number of seconds >= 0")
    options = _check_options(f"{where} ({name})", entry.get("options", {}))
    if "chat_template" in options:
        options["chat_template"] = _read_template(f"{where} ({name})", options["chat_template"], base_dir)
    warm_prompts = _warm_prompts(f"{where} ({name})", entry, kind, base_dir)
    return ModelSpec(name=name, kind=kind, source=source, sha256=sha256 and sha256.lower(), size=size,
                     options=options, version_id=version_id, warm=warm, ttl_s=ttl_s, warm_prompts=warm_prompts)


def parse_manifest(text: str, base_dir: Path | None = None) -> tuple[ModelSpec, ...]:
    """The manifest's entries; `base_dir` is where relative `chat_template` files are (the manifest's own)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML: {exc}") from None
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ManifestError("'models' must be an array of tables ([[models]])")
    specs = tuple(_parse_entry(i, entry, base_dir) for i, entry in enumerate(entries))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ManifestError(f"model name {spec.name!r} is declared twice")
        seen.add(spec.name)
    return specs


def load_manifest(path: Path) -> tuple[ModelSpec, ...]:
    """Read the manifest file; a missing file is an empty manifest (models can still be found on disk)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    try:
        return parse_manifest(text, path.parent)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
