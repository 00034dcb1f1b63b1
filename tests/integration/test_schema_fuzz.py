"""schemathesis against the app's own OpenAPI schema, every route, with the demo model serving:
no 5xx, and every response matches what the schema documents. Example counts are bounded so it runs
in CI in a few minutes; generated replies are capped at a few tokens to keep each example short."""

from __future__ import annotations

import json
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

MAX_REPLY_TOKENS = 4
REAL_MODELS = {"/v1/chat/completions": "smollm2-135m", "/v1/embeddings": "smollm2-135m-embed",
               "/v1/completions": "smollm2-135m", "/v1/responses": "smollm2-135m",
               "/tokenize": "smollm2-135m", "/detokenize": "smollm2-135m", "/v1/messages": "smollm2-135m",
               "/v1/messages/count_tokens": "smollm2-135m"}
ANTHROPIC_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")
CHUNK_OBJECTS = {"/v1/chat/completions": "chat.completion.chunk", "/v1/completions": "text_completion"}


@pytest.fixture(scope="session")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _check_event_stream(case, base_url):
    """schemathesis cannot read Server-Sent Events responses: check streamed replies here."""
    response = httpx.request(case.method, base_url + case.formatted_path, json=case.body, timeout=120)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        _check_error(case.path, response.json())
        return
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event for event in response.text.split("\n\n") if event]
    if case.path == "/v1/messages":  # named events: message_start first, message_stop (or an error) last
        payloads = [json.loads(event.split("data: ", 1)[1]) for event in events]
        assert payloads[0]["type"] == "message_start" and payloads[-1]["type"] in ("message_stop", "error")
        return
    if case.path == "/v1/responses":  # named events, no [DONE]: the last says how the response ended
        payloads = [json.loads(event.split("data: ", 1)[1]) for event in events]
        assert [payload["sequence_number"] for payload in payloads] == list(range(len(payloads)))
        assert payloads[-1]["type"] in ("response.completed", "response.incomplete"), payloads[-1]
        return
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        chunk = json.loads(event.removeprefix("data: "))
        assert "error" not in chunk, chunk
        assert chunk["object"] == CHUNK_OBJECTS[case.path]


def _check_error(route, body):
    if route in ANTHROPIC_ROUTES:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}, body


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_conforms(case, server):
    if isinstance(case.body, dict):
        # Half the generated bodies name a real model, so the model paths are fuzzed too, not only 404s.
        if case.path in REAL_MODELS and zlib.crc32(json.dumps(case.body, default=str).encode()) % 2:
            case.body["model"] = REAL_MODELS[case.path]
        for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if _is_number(case.body.get(field)):  # 14.0 decodes as an integer too
                case.body[field] = max(1, min(case.body[field], MAX_REPLY_TOKENS))
        if isinstance(case.body.get("messages"), list) and case.body.get("max_tokens") is None:
            case.body["max_tokens"] = MAX_REPLY_TOKENS  # absent or null: the server default is long
        if case.path == "/v1/responses" and case.body.get("max_output_tokens") is None:
            case.body["max_output_tokens"] = MAX_REPLY_TOKENS
        if _is_number(case.body.get("n")):
            case.body["n"] = max(1, min(case.body["n"], 2))
    if isinstance(case.body, dict) and case.body.get("stream") is True:
        _check_event_stream(case, server.base_url)
        return
    # Not checked: whether requests are accepted or refused exactly as the schema alone predicts.
    # Decoding is lenient in places (Litestar coerces 0/1 to booleans), and schema-valid requests are
    # rightly refused for what no schema states (a prompt over the model's context, a chat model
    # asked for embeddings). What must hold: no 5xx, and every response as documented.
    excluded = [schemathesis.checks.negative_data_rejection, schemathesis.checks.positive_data_acceptance]
    case.call_and_validate(timeout=120, excluded_checks=excluded)


# A valid body per generating route, whose fields are replaced one at a time below.
BASE_BODIES = {
    "/v1/chat/completions": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/v1/completions": {"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2},
    "/v1/responses": {"model": "smollm2-135m", "input": "Hi", "max_output_tokens": 2},
    "/v1/embeddings": {"model": "smollm2-135m-embed", "input": "Hi"},
    "/v1/messages": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
}
NOT_OBJECTS = ["json", 1, 2.5, True, ["json"]]


def _resolve(node, components):
    while "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[1]]
    return node


def _only_objects(node, components):
    """The object schema a field must match when nothing but an object (or null) is allowed, else None."""
    node = _resolve(node, components)
    options = [_resolve(option, components) for option in node.get("oneOf", node.get("anyOf", [node]))]
    options = [option for option in options if option.get("type") != "null"]
    if options and all(option.get("type") == "object" or "properties" in option for option in options):
        return options[0]
    return None


def _object_fields(node, components, path=(), depth=0):
    """Paths of the body's fields that only take objects, two levels deep (through arrays' items too)."""
    for name, field in (node.get("properties") or {}).items():
        target = _only_objects(field, components)
        if target is not None:
            yield (*path, name)
            if depth < 1:
                yield from _object_fields(target, components, (*path, name), depth + 1)
        items = _resolve(field, components).get("items")
        if items is not None and _only_objects(items, components) is not None:
            yield (*path, name, 0)


def _with(body, path, value):
    """`body` with `value` at `path` (missing parents become empty objects); None where it cannot go."""
    body = json.loads(json.dumps(body))
    parent = body
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else parent.setdefault(key, {})
    if isinstance(path[-1], int) != isinstance(parent, list):
        return None
    parent[path[-1]] = value
    return body


def test_object_fields_refuse_every_other_kind_of_value(server, api_schema):
    """Every field that only takes an object (and, one level down, its object fields and arrays' object
    items) answers a string, a number, a boolean or an array with a 400 naming it, never a 500 (a
    Responses `text.format` given as "json" did)."""
    raw = httpx.get(f"{server.base_url}/schema/openapi.json").json()
    components = raw["components"]["schemas"]
    tried, reached = 0, set()
    for route, base in BASE_BODIES.items():
        schema = raw["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for path in _object_fields(_resolve(schema, components), components):
            for value in NOT_OBJECTS:
                body = _with(base, path, value)
                if body is None:
                    continue
                response = httpx.post(f"{server.base_url}{route}", json=body, timeout=120)
                reached.add((route, path))
                assert response.status_code == 400, (route, path, value, response.text)
                _check_error(route, response.json())
                tried += 1
    assert ("/v1/responses", ("text", "format")) in reached and ("/v1/chat/completions", ("messages", 0)) in reached
    assert ("/v1/messages", ("messages", 0)) in reached
    assert tried > 50  # the walk reached nested fields, not only a handful
