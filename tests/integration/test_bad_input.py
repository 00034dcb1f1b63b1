"""Bad input from the hardening list: each gets an OpenAI error with the right status, and the
server is still healthy afterwards."""

from __future__ import annotations

import pytest

CHAT, EMBED = "smollm2-135m", "smollm2-135m-embed"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def still_healthy(http):
    yield
    assert http.get("/health").status_code == 200
    assert http.post("/v1/chat/completions", json={"model": CHAT, "messages": HI, "max_tokens": 1}).status_code == 200


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body


def _raw(http, path, payload: bytes):
    return http.post(path, content=payload, headers={"content-type": "application/json"})


@pytest.mark.parametrize("payload", [
    b"{", b"[]", b"null", b'"text"', b"{\"model\": " + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
], ids=["truncated", "array", "null", "string", "nested-5000-deep", "invalid-utf8", "nan"])
def test_malformed_bodies(http, payload):
    _error(_raw(http, "/v1/chat/completions", payload), 400)


@pytest.mark.parametrize(("field", "value"), [
    ("model", 3), ("messages", "hi"), ("messages", [{"role": "user", "content": 5}]), ("temperature", [1]),
    ("top_p", 2), ("max_tokens", -1), ("max_tokens", 10**30), ("seed", "x"), ("stream", "yes"),
    ("stop", [1, 2]), ("tools", {"type": "function"}), ("logit_bias", {"12": 1000}), ("n", 0),
    ("presence_penalty", 5), ("response_format", "json"),
])
def test_wrong_types_and_values(http, field, value):
    body = {"model": CHAT, "messages": HI, "max_tokens": 2, field: value}
    _error(http.post("/v1/chat/completions", json=body), 400)


def test_huge_max_tokens_is_capped_to_the_context(http):
    body = {"model": CHAT, "messages": HI, "max_tokens": 10**9, "stop": ["."], "temperature": 0}
    assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_unsupported_content_part(http):
    body = {"model": CHAT, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    assert "input_audio" in _error(http.post("/v1/chat/completions", json=body), 400)["message"]


@pytest.mark.parametrize("name", ["../" * 5 + "etc/passwd", "%2e%2e%2f", "/etc/passwd", "a\x00b", "m" * 10_000, ""])
def test_hostile_model_names_in_bodies(http, name):
    chat = http.post("/v1/chat/completions", json={"model": name, "messages": HI})
    embed = http.post("/v1/embeddings", json={"model": name, "input": "x"})
    for response in (chat, embed):
        assert response.status_code in (400, 404), response.text
        assert len(response.json()["error"]["message"]) < 500


@pytest.mark.parametrize("body", [
    {"model": EMBED, "input": "word " * 5000},
    {"model": EMBED, "input": [[-1, 5]]},
    {"model": EMBED, "input": [[10**8]]},
    {"model": EMBED, "input": [None]},
    {"model": EMBED, "input": ["ok"] * 3000},
    {"model": EMBED, "input": "x", "encoding_format": "hex"},
])
def test_bad_embedding_inputs(http, body):
    _error(http.post("/v1/embeddings", json=body), 400)


def test_twenty_megabytes(http):
    payload = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (20 * 1024 * 1024) + b'"}]}'
    _error(_raw(http, "/v1/chat/completions", payload), 413)


def test_model_management_names_are_validated(http):
    for name in ("..", "%2e%2e", "a%00b"):
        assert http.post(f"/models/{name}/pull").status_code == 404
