"""Bad requests get OpenAI error bodies with the right status, never 422 or 500, and the server goes on."""

from __future__ import annotations

import pytest

CHAT = "smollm2-135m"


def _assert_openai_error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_malformed_json(http):
    response = http.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    _assert_openai_error(response, 400)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": CHAT}, "messages"),
    ({"model": CHAT, "messages": []}, "messages"),
    ({"model": CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, None),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "n": 17}, "n"),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stop": ["x"] * 10_000}, "stop"),
    ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 1}}, "logit_bias"),
])
def test_invalid_chat_bodies(http, body, param):
    error = _assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    if param is not None:
        assert error["param"] is not None and param in error["param"]


def test_image_content_is_a_clear_400(http):
    body = {"model": CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    error = _assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert "image_url" in error["message"]


def test_unknown_route_and_method(http):
    _assert_openai_error(http.get("/v1/nothing-here"), 404)
    _assert_openai_error(http.get("/v1/chat/completions"), 405)


def test_body_too_large(http):
    big = b'{"model": "x", "input": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    response = http.post("/v1/embeddings", content=big, headers={"content-type": "application/json"})
    _assert_openai_error(response, 413)


def test_server_still_serves_after_errors(http):
    assert http.get("/health").status_code == 200
    response = http.post("/v1/chat/completions", json={"model": CHAT, "max_tokens": 2,
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200


def test_cors_preflight(http):
    response = http.options("/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert "POST" in response.headers["access-control-allow-methods"]


def test_openapi_schema_and_docs(http):
    schema = http.get("/schema/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/embeddings" in schema["paths"]
    assert "ChatCompletionRequest" in str(schema["components"]["schemas"])
    assert http.get("/schema/swagger").status_code == 200
    assert http.get("/schema/redoc").status_code == 200


def test_response_headers_are_sane(http):
    for response in (http.get("/v1/models"), http.get("/v1/nothing-here"), http.get("/health")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"]
