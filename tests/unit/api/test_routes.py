"""The API in-process (Litestar's test client) over fake engines: routing, validation, error mapping,
streaming and headers in milliseconds. The real server with real models is tested in integration/."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from handler.app import create_app
from handler.settings import Settings
from tests.support.fake_engine import REPLY, fake_loader

HI = [{"role": "user", "content": "hi"}]
CHAT, EMBED = "fake-chat", "fake-embed"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    (volume / "fake.gguf").write_bytes(b"GGUF")
    manifest = volume / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "{CHAT}"\nkind = "chat"\nsource = "fake.gguf"\n\n'
                        f'[[models]]\nname = "{EMBED}"\nkind = "embedding"\nsource = "fake.gguf"\n')
    settings = Settings.from_env({"MODEL_DIR": str(volume), "MODELS_MANIFEST": str(manifest), "N_THREADS": "1"})
    with TestClient(create_app(settings, loader=fake_loader)) as test_client:
        yield test_client


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_a_chat_completion(client):
    first = client.post("/v1/chat/completions", json={"model": CHAT, "messages": HI})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["choices"][0]["message"]["content"] == REPLY and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(REPLY.split())
    second = client.post("/v1/chat/completions", json={"model": CHAT, "messages": HI, "max_tokens": 2})
    assert second.json()["choices"][0]["finish_reason"] == "length"
    assert "x-cold-start" not in second.headers  # the model was loaded by the first request


def test_a_streamed_chat_completion(client):
    response = client.post("/v1/chat/completions", json={"model": CHAT, "messages": HI, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event.removeprefix("data: ") for event in response.text.split("\n\n") if event]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
    assert text == REPLY and chunks[-1]["usage"]["completion_tokens"] == len(REPLY.split())


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({"model": "nope", "messages": HI}, 404, "model_not_found", "model"),
    ({"model": EMBED, "messages": HI}, 400, "model_not_chat", "model"),
    ({"model": CHAT, "messages": "hi"}, 400, "invalid_value", "messages"),
    ({"model": CHAT, "messages": HI, "temperature": 5}, 400, "invalid_value", "temperature"),
    ({"model": CHAT, "messages": HI, "logit_bias": {"x": 1}}, 400, None, "logit_bias"),
    ({"model": CHAT, "messages": HI, "tool_choice": "required"}, 400, None, "tool_choice"),
    ({"model": CHAT, "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "maxLength": 30000}}}},
     400, "schema_too_complex", "response_format.json_schema.schema.maxLength"),
])
def test_chat_errors(client, body, status, code, param):
    error = _error(client.post("/v1/chat/completions", json=body), status)
    assert (error["param"], error["code"] if code else None) == (param, code)


def test_malformed_and_oversized_bodies(client):
    _error(client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}), 400)
    _error(client.post("/v1/chat/completions", content=b"x" * (11 * 1024 * 1024),
                       headers={"content-type": "application/json"}), 413)
    _error(client.get("/v1/no-such-route"), 404)


def test_embeddings(client):
    response = client.post("/v1/embeddings", json={"model": EMBED, "input": ["a", "bb"]})
    assert response.status_code == 200, response.text
    assert [item["index"] for item in response.json()["data"]] == [0, 1]
    assert _error(client.post("/v1/embeddings", json={"model": CHAT, "input": "a"}), 400)["code"] == "model_not_embedding"
    assert _error(client.post("/v1/embeddings", json={"model": EMBED, "input": []}), 400)["param"] == "input"


def test_models_and_health(client):
    listed = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert set(listed) == {CHAT, EMBED} and listed[CHAT]["kind"] == "chat"
    assert client.get(f"/v1/models/{EMBED}").json()["kind"] == "embedding"
    _error(client.get("/v1/models/missing"), 404)
    assert client.get("/health").status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_a_body_field_named_like_a_dependency_is_a_400_not_a_500(client):
    """Litestar blames a dependency, not the client, for an invalid field sharing a dependency's name:
    the Responses API's `store` once met a dependency called `store` and answered 500."""
    response = client.post("/v1/responses", json={"model": CHAT, "input": "hi", "store": {}})
    assert _error(response, 400)["param"] == "store"


# Every generating route, the same conversation: each goes through one model call, so each gets the
# same headers, the same usage and its own metric label.
GENERATING = {
    "chat": ("/v1/chat/completions", {"messages": HI, "max_tokens": 3}),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 3}),
    "responses": ("/v1/responses", {"input": "hi", "max_output_tokens": 3}),
    "messages": ("/v1/messages", {"messages": HI, "max_tokens": 3}),
}


def _prompt_and_output(route: str, body: dict) -> tuple[int, int]:
    usage = body["usage"]
    if route in ("chat", "completions"):
        return usage["prompt_tokens"], usage["completion_tokens"]
    if route == "responses":
        return usage["input_tokens"], usage["output_tokens"]
    return usage["input_tokens"] + usage["cache_read_input_tokens"], usage["output_tokens"]


def _requests_counted(client, route: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith("gguf_model_requests_total{") and f'endpoint="{route}"' in line)


@pytest.mark.parametrize("route", GENERATING)
@pytest.mark.parametrize("stream", [False, True])
def test_every_generating_route_is_one_model_call(client, route, stream):
    path, body = GENERATING[route]
    before = _requests_counted(client, route)
    response = client.post(path, json={"model": CHAT, "stream": stream, **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream" if stream else "application/json")
    assert "x-request-id" not in response.headers or response.headers["x-request-id"]
    assert _requests_counted(client, route) == before + 1  # responses once counted as "chat"
    if not stream:
        chat = client.post("/v1/chat/completions", json={"model": CHAT, **GENERATING["chat"][1]}).json()
        prompt, output = _prompt_and_output(route, response.json())
        assert output == chat["usage"]["completion_tokens"] == 3
        if route != "completions":  # a raw prompt is not the rendered conversation
            assert prompt == chat["usage"]["prompt_tokens"]


@pytest.mark.parametrize(("method", "path", "status", "kind"), [
    ("GET", "/v1/messages", 405, "invalid_request_error"),
    ("POST", "/v1/messages/batches", 404, "not_found_error"),
    ("GET", "/v1/messages/count_tokens", 405, "invalid_request_error"),
])
def test_routing_errors_under_the_messages_path_are_anthropic_shaped(client, method, path, status, kind):
    """No route matched, so the Messages controller's handler never ran: the path still says which API
    the caller speaks (Anthropic's SDK reads `error.type`)."""
    response = client.request(method, path, json={})
    assert response.status_code == status
    assert response.json() == {"type": "error", "error": {"type": kind, "message": response.json()["error"]["message"]}}


@pytest.mark.parametrize("path", ["/v1/messagesx", "/v1/chat/nothing", "/v1/message"])
def test_routing_errors_elsewhere_stay_openai_shaped(client, path):
    assert set(_error(client.post(path, json={}), 404)) == {"message", "type", "param", "code"}


def test_messages_errors_are_anthropic_shaped(client):
    response = client.post("/v1/messages", json={"model": "nope", "messages": HI, "max_tokens": 3})
    assert response.status_code == 404
    assert response.json() == {"type": "error", "error": {"type": "not_found_error",
                                                          "message": response.json()["error"]["message"]}}
    response = client.post("/v1/messages", json={"model": CHAT, "messages": HI})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in response.json()["error"]["message"]
    response = client.post("/v1/messages/count_tokens", json={"model": EMBED, "messages": HI})
    assert response.status_code == 400 and response.json()["type"] == "error"


PREFILLED = [*HI, {"role": "assistant", "content": "The answer is"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def _prompt_text(client, body: dict) -> str:
    tokens = client.post("/tokenize", json={"model": CHAT, **body}).json()["tokens"]
    return bytes(tokens).decode()  # the fake model's tokens are the prompt's bytes


def test_continued_prompts_end_in_the_assistants_text(client):
    """`continue_final_message` (chat, /tokenize) and a Messages prefill read the same prompt: the
    conversation up to the assistant's text, no end of turn after it; the reply is only what follows."""
    prompt = _prompt_text(client, {"messages": PREFILLED, "continue_final_message": True})
    assert prompt.endswith("<|im_start|>assistant\nThe answer is")
    assert _prompt_text(client, {"messages": PREFILLED}).endswith("The answer is<|im_end|>\n<|im_start|>assistant\n")
    chat = client.post("/v1/chat/completions", json={"model": CHAT, "messages": PREFILLED,
                                                     "continue_final_message": True}).json()
    message = client.post("/v1/messages", json={"model": CHAT, "messages": PREFILLED, "max_tokens": 16}).json()
    counted = client.post("/v1/messages/count_tokens", json={"model": CHAT, "messages": PREFILLED}).json()
    assert chat["usage"]["prompt_tokens"] == len(prompt.encode()) == counted["input_tokens"]
    assert message["usage"]["input_tokens"] + message["usage"]["cache_read_input_tokens"] == len(prompt.encode())
    assert message["content"] == [{"type": "text", "text": REPLY}]  # only what was generated


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": HI}, "messages"),
    ({"messages": [*HI, {"role": "assistant", "tool_calls": [CALL]}]}, "messages"),
    ({"messages": PREFILLED, "enable_thinking": True}, "enable_thinking"),
    ({"messages": PREFILLED, "chat_template_kwargs": {"enable_thinking": True}}, "enable_thinking"),
    ({"messages": PREFILLED, "tools": [FUNCTION], "tool_choice": "required"}, "messages"),
    ({"messages": PREFILLED, "response_format": {"type": "json_object"}}, "messages"),
])
def test_what_cannot_be_continued_is_a_400(client, extra, param):
    body = {"model": CHAT, "continue_final_message": True, **extra}
    assert _error(client.post("/v1/chat/completions", json=body), 400)["param"] == param
    if "messages" in extra and len(extra) == 1:
        assert _error(client.post("/tokenize", json=body), 400)["param"] == param


@pytest.mark.parametrize(("messages", "extra", "words"), [
    ([*HI, {"role": "assistant", "content": "The answer is "}], {}, "trailing whitespace"),
    (PREFILLED, {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ([*HI, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
     {"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, "tool calls"),
])
def test_a_prefill_anthropic_refuses_is_an_anthropic_400(client, messages, extra, words):
    response = client.post("/v1/messages", json={"model": CHAT, "messages": messages, "max_tokens": 3, **extra})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert words in response.json()["error"]["message"]


def test_an_empty_final_assistant_turn_is_no_prefill(client):
    body = {"model": CHAT, "max_tokens": 3}
    empty = client.post("/v1/messages/count_tokens", json={**body, "messages": [*HI, {"role": "assistant", "content": ""}]})
    plain = client.post("/v1/messages/count_tokens", json={**body, "messages": HI})
    assert empty.json() == plain.json()


def test_a_lone_empty_assistant_turn_is_a_400_not_a_500(client):
    """Dropping the empty final turn left no message at all: the prefill check read past the end (a 500
    the API fuzz found)."""
    body = {"model": CHAT, "max_tokens": 3, "messages": [{"role": "assistant", "content": []}]}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = client.post(path, json=body)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
