"""Faults: a corrupt model file on the volume, a model that cannot load, a malicious chat template.
Each time the request gets a clear error, other models keep serving, nothing partial remains."""

from __future__ import annotations

import os

import httpx
import pytest

HI = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def volume(tmp_path, demo_model_path):
    path = tmp_path / "volume"
    path.mkdir()
    os.symlink(demo_model_path, path / "good-model.gguf")
    (path / "truncated.gguf").write_bytes(demo_model_path.read_bytes()[: 1024 * 1024])
    (path / "garbage.gguf").write_bytes(b"not a gguf file at all" * 100)
    return path


def _chat(server, model):
    return httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": model, **HI}, timeout=120)


def test_corrupt_files_fail_clearly_and_others_keep_serving(tmp_path, volume, launch):
    server = launch({"MODEL_DIR": str(volume), "MODELS_MANIFEST": str(tmp_path / "none.toml")})
    for name in ("truncated", "garbage"):
        failed = _chat(server, name)
        assert failed.status_code == 500, failed.text
        error = failed.json()["error"]
        assert error["code"] == "model_load_failed" and f"{name}.gguf" in error["message"]
    assert _chat(server, "good-model").status_code == 200
    assert _chat(server, "garbage").status_code == 500  # tried again, still a clear error, no crash
    assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_a_model_that_cannot_load(tmp_path, demo_model_path, launch):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "too-big"\nsource = "{demo_model_path}"\n'
                        f'[models.options]\nn_ctx = 2000000000\n\n'
                        f'[[models]]\nname = "fine"\nsource = "{demo_model_path}"\n')
    server = launch({"MODELS_MANIFEST": str(manifest)})
    failed = _chat(server, "too-big")
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "model_load_failed"
    assert _chat(server, "fine").status_code == 200
