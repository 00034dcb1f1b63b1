import json
from pathlib import Path

import pytest

from handler.store.manifest import ManifestError, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_manifest_parses():
    specs = load_manifest(REPO / "models_manifest" / "default.toml")
    assert [(spec.name, spec.kind) for spec in specs] == [("smollm2-135m", "chat"), ("smollm2-135m-embed", "embedding")]
    assert specs[0].source == specs[1].source
    assert specs[0].sha256 and len(specs[0].sha256) == 64


def test_full_entry():
    (spec,) = parse_manifest("""
        [[models]]
        name = "qwen3-0.6b"
        kind = "chat"
        source = "s3://bucket/qwen/Qwen3-0.6B-Q8_0.gguf"
        size = 123
        [models.options]
        n_ctx = 8192
        chat_format = "qwen3"
        flash_attn = true
    """)
    assert spec.is_remote and spec.chat_format == "qwen3"
    assert spec.options == {"n_ctx": 8192, "chat_format": "qwen3", "flash_attn": True}


def test_missing_file_is_an_empty_manifest(tmp_path):
    assert load_manifest(tmp_path / "none.toml") == ()


@pytest.mark.parametrize(("text", "message"), [
    ("[[models]]\nname = '../x'\nsource = 'a.gguf'", "not a valid model id"),
    ("[[models]]\nname = 'a'\nkind = 'image'\nsource = 'a.gguf'", "kind"),
    ("[[models]]\nname = 'a'", "source"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\nsha256 = 'abc'", "sha256"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\nsize = -1", "size"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\n[models.options]\nn_ctx = 'big'", "wrong type"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\n[models.options]\nbogus = 1", "unknown option"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\n[models.options]\npooling = 'max'", "pooling"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\ncolour = 'red'", "unknown field"),
    ("[[models]]\nname = 'a'\nsource = 'a.gguf'\n[[models]]\nname = 'a'\nsource = 'b.gguf'", "twice"),
    ("models = 3", "array of tables"),
    ("[[models]\n", "not valid TOML"),
])
def test_errors_say_what_is_wrong(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text)


def _entry(options: str) -> str:
    return f"[[models]]\nname = 'a'\nsource = 'a.gguf'\n[models.options]\n{options}\n"


def test_chat_template_from_a_file_next_to_the_manifest(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "turns.jinja").write_text("{{ messages[0].content }}")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(_entry("chat_template = 'templates/turns.jinja'"))
    (spec,) = load_manifest(manifest)
    assert spec.options["chat_template"] == "{{ messages[0].content }}"


def test_inline_chat_template():
    (spec,) = parse_manifest(_entry("chat_template = '{% for m in messages %}{{ m.content }}{% endfor %}'"))
    assert spec.options["chat_template"].startswith("{% for m")


@pytest.mark.parametrize(("options", "message"), [
    ("chat_template = 'missing.jinja'", "cannot be read"),
    ("chat_template = '{% for %}'", "does not compile"),
    ("chat_template = 3", "wrong type"),
    ("chat_format = 'alpaca'", "chat_format must be one of"),
])
def test_bad_chat_templates_are_refused_at_start(tmp_path, options, message):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(_entry(options))
    with pytest.raises(ManifestError, match=message):
        load_manifest(manifest)


def test_warm_prompts_are_texts_or_files_next_to_the_manifest(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "system.txt").write_text("You sort boxes.")
    body = {"messages": [{"role": "system", "content": "You call tools."}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    (tmp_path / "prompts" / "agent.json").write_text(json.dumps(body))
    (spec,) = parse_manifest("[[models]]\nname = 'a'\nsource = 'a.gguf'\nwarm = true\n"
                             "warm_prompts = ['You help.', { file = 'prompts/system.txt' }, { file = 'prompts/agent.json' }]\n",
                             base_dir=tmp_path)
    assert spec.warm_prompts == ({"messages": [{"role": "system", "content": "You help."}]},
                                 {"messages": [{"role": "system", "content": "You sort boxes."}]},
                                 body)


@pytest.mark.parametrize(("prompts", "message"), [
    ("'not a list'", "must be a list"),
    ("[3]", "a text or"),
    ("['']", "a text or"),
    ("[{ file = 'missing.txt' }]", "cannot be read"),
    ("[{ file = 'bad.json' }]", "is not JSON"),
    ("[{ file = 'list.json' }]", "chat request body with messages"),
    ("[{ path = 'x.txt' }]", "a text or"),
])
def test_bad_warm_prompts_are_refused_at_start(tmp_path, prompts, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match=message):
        parse_manifest(f"[[models]]\nname = 'a'\nsource = 'a.gguf'\nwarm_prompts = {prompts}\n", base_dir=tmp_path)


def test_warm_prompts_are_for_chat_models():
    with pytest.raises(ManifestError, match="for chat models"):
        parse_manifest("[[models]]\nname = 'e'\nkind = 'embedding'\nsource = 'a.gguf'\nwarm_prompts = ['x']\n")
