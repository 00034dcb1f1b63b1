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
