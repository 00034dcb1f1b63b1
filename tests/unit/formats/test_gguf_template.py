"""GGUF chat templates are untrusted code: they render in the sandbox and cannot reach Python internals."""

from __future__ import annotations

import pytest

from handler.formats.gguf_template import TemplateRenderError, render_gguf_template
from handler.formats.qwen3 import Qwen3Format
from handler.formats.registry import choose_format
from handler.formats.template_format import TemplateFormat

LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ messages.append({'role': 'x'}) }}",
]


def test_renders_a_template():
    prompt = render_gguf_template(LLAMA3_LIKE, [{"role": "user", "content": "hi"}], bos_token="<s>")
    assert prompt == "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.mark.parametrize("template", ESCAPES)
def test_escapes_are_refused(template, tmp_path):
    with pytest.raises(TemplateRenderError):
        render_gguf_template(template, [{"role": "user", "content": "hi"}])


def test_raise_exception_becomes_a_render_error():
    with pytest.raises(TemplateRenderError, match="roles must alternate"):
        render_gguf_template("{{ raise_exception('roles must alternate') }}", [])


def test_broken_template_is_a_render_error():
    with pytest.raises(TemplateRenderError, match="does not compile"):
        render_gguf_template("{% for %}", [])


def test_format_choice():
    assert isinstance(choose_format(None, "<|im_start|>{{ x }}"), Qwen3Format)
    assert isinstance(choose_format(None, None), Qwen3Format)
    assert isinstance(choose_format("qwen3", LLAMA3_LIKE), Qwen3Format)
    assert isinstance(choose_format(None, LLAMA3_LIKE), TemplateFormat)
    assert isinstance(choose_format("gguf", "<|im_start|>"), TemplateFormat)


def _gguf_with_template(path, template):
    """A GGUF file (metadata only) carrying `template` as its chat template, written with `gguf`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _template_of(path):
    import gguf

    field = gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


def test_a_gguf_whose_template_tries_to_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = ("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
               "{% for m in messages %}{{ m.content }}{% endfor %}")
    model = tmp_path / "evil.gguf"
    _gguf_with_template(model, payload)
    template = _template_of(model)
    assert "os.system" in template
    with pytest.raises(TemplateRenderError):
        render_gguf_template(template, [{"role": "user", "content": "hi"}])
    assert not marker.exists()
