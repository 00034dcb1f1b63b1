"""The playground's page and files: public even with API keys, strict security headers, nothing inline."""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient

from handler.api.playground import WEB_DIR
from handler.app import create_app
from handler.settings import Settings
from tests.support.fake_engine import fake_loader

FILES = sorted(path.name for path in WEB_DIR.iterdir() if path.suffix in (".js", ".css", ".svg"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    (volume / "fake.gguf").write_bytes(b"GGUF")
    manifest = volume / "manifest.toml"
    manifest.write_text('[[models]]\nname = "fake-chat"\nkind = "chat"\nsource = "fake.gguf"\n\n'
                        '[[models]]\nname = "remote-chat"\nkind = "chat"\nsource = "s3://bucket/remote.gguf"\n')
    settings = Settings.from_env({"MODEL_DIR": str(volume), "MODELS_MANIFEST": str(manifest), "N_THREADS": "1",
                                  "API_KEY": "secret", "S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    with TestClient(create_app(settings, loader=fake_loader)) as test_client:
        yield test_client


def _assert_strict(response):
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_the_page_needs_no_key_and_carries_the_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    _assert_strict(response)


@pytest.mark.parametrize("name", FILES)
def test_the_page_files_need_no_key_and_carry_the_security_headers(client, name):
    response = client.get(f"/playground/{name}")
    assert response.status_code == 200, name
    _assert_strict(response)


def test_the_page_reveals_nothing_and_has_no_inline_script_or_style(client):
    html = client.get("/").text
    assert "fake-chat" not in html and "secret" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "a file from elsewhere"


def test_the_page_files_load_nothing_from_elsewhere():
    for path in WEB_DIR.iterdir():
        if path.suffix not in (".html", ".js", ".css", ".svg"):
            continue
        text = path.read_text()
        assert not re.search(r"(import|from)\s*[\"']https?:", text), path.name
        assert "@import" not in text and "url(http" not in text, path.name


def test_the_api_still_needs_the_key(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/playground/../../settings.py").status_code in (401, 404)


def test_models_show_one_state_each(client):
    cards = client.get("/v1/models", headers={"Authorization": "Bearer secret"}).json()["data"]
    states = {card["id"]: card["state"] for card in cards}
    assert states == {"fake-chat": "on_volume", "remote-chat": "remote"}
    client.post("/v1/chat/completions", headers={"Authorization": "Bearer secret"},
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})
    card = client.get("/v1/models/fake-chat", headers={"Authorization": "Bearer secret"}).json()
    assert card["state"] == "loaded" and card["loaded"] is True
