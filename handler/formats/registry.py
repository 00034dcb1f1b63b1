"""Which chat format a model gets, chosen once when it loads: the manifest's `chat_format` if set,
else the family its template's markers show.

- `<|im_start|>` with `<think>` and `<tool_call>` (Qwen3), or plain ChatML without tool markup
  (SmolLM2, …), or no template at all: `Qwen3Format`, the exact pure renderer (with the system prompt
  the template adds when a conversation has none, as SmolLM2's does);
- `<tool_call>` (Qwen2.5, Hermes): `HermesFormat`;  `[TOOL_CALLS]`: `MistralFormat`;
  `<|start_header_id|>` (Llama 3.x): `Llama3Format`;  anything else: the generic `TemplateFormat`.

`chat_format = "gguf"` renders with the template whatever it is (detecting the family among the
template formats), as does a manifest `chat_template`.
"""

from __future__ import annotations

from handler.formats.chat_format import ChatFormat
from handler.formats.families import HermesFormat, Llama3Format, MistralFormat
from handler.formats.gguf_template import default_system_prompt
from handler.formats.qwen3 import Qwen3Format
from handler.formats.template_format import TemplateFormat

TEMPLATE_FAMILIES: dict[str, type[TemplateFormat]] = {
    "hermes": HermesFormat, "llama3": Llama3Format, "mistral": MistralFormat, "generic": TemplateFormat,
}
CHAT_FORMATS = ("qwen3", "chatml", "gguf", *TEMPLATE_FAMILIES)


def template_family(template: str) -> str:
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|start_header_id|>" in template:
        return "llama3"
    return "generic"


def _is_qwen3_renderable(template: str) -> bool:
    chatml = "<|im_start|>" in template
    return chatml and ("<think>" in template or "<tool_call>" not in template)


def choose_format(chat_format: str | None, template: str | None, *, custom_template: str | None = None,
                  bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """The format for a model: `chat_format` from the manifest, `template` from the GGUF,
    `custom_template` from the manifest's `chat_template` (used instead of the GGUF's)."""
    if chat_format in ("qwen3", "chatml"):
        return Qwen3Format(name=chat_format)
    source = custom_template or template
    if not source:
        return Qwen3Format(name="chatml")  # no template at all: ChatML is the common default
    if chat_format is None and custom_template is None and _is_qwen3_renderable(source):
        return Qwen3Format(name="qwen3" if "<think>" in source else "chatml",
                           default_system=default_system_prompt(source))
    family = chat_format if chat_format in TEMPLATE_FAMILIES else template_family(source)
    return TEMPLATE_FAMILIES[family](source, bos_token=bos_token, eos_token=eos_token)
