"""Chat templates embedded in GGUF files, rendered only inside Jinja's immutable sandbox.

A GGUF file is untrusted input: its `tokenizer.chat_template` is code. Rendering it in a plain Jinja
environment lets a crafted model run Python on the server (CVE-2024-34359), so templates here are only
ever compiled by `ImmutableSandboxedEnvironment`, which blocks attribute access to internals and
mutation of the values passed in.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRenderError(ValueError):
    """The model's chat template failed, or refused the conversation (`raise_exception`)."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@functools.lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """Compile once per distinct template text, in the sandbox, with transformers' whitespace rules."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateRenderError(f"the model's chat template does not compile: {exc}") from None


def render_gguf_template(source: str, messages: Sequence[Mapping[str, Any]], *,
                         tools: Sequence[Any] | None = None, bos_token: str = "", eos_token: str = "",
                         add_generation_prompt: bool = True, **extra: Any) -> str:
    template = compile_template(source)
    try:
        return template.render(messages=list(messages), tools=list(tools) if tools else None,
                               bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt, **extra)
    except TemplateRenderError:
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateRenderError(f"the model's chat template tried a forbidden operation: {exc}") from None
    except Exception as exc:  # a template is arbitrary code: any failure is the template's, not ours
        raise TemplateRenderError(f"the model's chat template failed: {exc}") from None


_PROBE = "\ue001"  # private use: no template writes it on its own
_SYSTEM_TURN = re.compile(r"<\|im_start\|>system\n(?P<text>.*?)<\|im_end\|>\n", re.DOTALL)


def default_system_prompt(source: str) -> str | None:
    """The system prompt a ChatML template adds when a conversation has none (SmolLM2's: "You are a
    helpful AI assistant named SmolLM, …"), read off the template by rendering it; None when it adds
    none, or adds something else than a system turn of its own."""
    user_turn = f"<|im_start|>user\n{_PROBE}<|im_end|>\n"
    try:
        alone = render_gguf_template(source, [{"role": "user", "content": _PROBE}], add_generation_prompt=False)
    except TemplateRenderError:
        return None
    system = _SYSTEM_TURN.fullmatch(alone.removesuffix(user_turn)) if alone.endswith(user_turn) else None
    return system["text"] if system else None
