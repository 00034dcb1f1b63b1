"""Hostile input against the real server: nothing a client sends may crash, stall or corrupt it.

Each test fires one item of the hardening list and then checks that the process is alive, that
/health answered while the request was being processed, and that the reply was 200 or OpenAI's
error body with a 4xx status.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.integration.test_lifecycle import LONG, _samples, sigterm_during_a_stream
from tests.support.waiting import wait_for

CHAT = "smollm2-135m"
HI = [{"role": "user", "content": "hi"}]
HEALTH_TIMEOUT_S = 5  # /health answers in milliseconds; this only tells "answering" from "stuck"


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body


def _while_healthy(server, request):
    """Send `request` (a function of an httpx client) and poll /health until it returns; return its reply."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=server.base_url, timeout=300) as http:
        reply = pool.submit(request, http)
        while not reply.done():
            assert http.get("/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
            with contextlib.suppress(concurrent.futures.TimeoutError):
                reply.result(timeout=0.2)
        response = reply.result()
    assert server.process.poll() is None, server.log()[-3000:]
    assert httpx.get(f"{server.base_url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
    return response


def _chat_body(**extra):
    return {"model": CHAT, "messages": HI, "max_tokens": 8, "temperature": 0, **extra}


def _json_schema(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _required_tool(parameters):
    return {"tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
            "tool_choice": "required"}


# ---- grammars: bombs refused with the field that caused them, never handed to llama.cpp
@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": _json_schema({"type": "string", "maxLength": 30000})},
     "response_format.json_schema.schema.maxLength"),
    ({"response_format": _json_schema({"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000_000})},
     "response_format.json_schema.schema.minItems"),
    ({"response_format": _json_schema({"type": "string", "pattern": "^a{1,30000}$"})},
     "response_format.json_schema.schema.pattern"),
    (_required_tool({"type": "object", "properties": {"q": {"type": "string", "maxLength": 30000}}}),
     "tools[0].function.parameters.properties.q.maxLength"),
    (_required_tool({"type": "object", "properties": {"n": {"type": "integer", "maximum": 10**40}}}),
     "tools[0].function.parameters.properties.n.maximum"),
], ids=["maxLength", "minItems", "pattern", "tool-maxLength", "tool-maximum"])
def test_schema_bombs_are_refused(server, extra, param):
    response = _while_healthy(server, lambda http: http.post("/v1/chat/completions", json=_chat_body(**extra)))
    error = _error(response, 400)
    assert (error["param"], error["code"]) == (param, "schema_too_complex")


def test_a_bounded_schema_still_constrains(server):
    schema = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 12}}, "required": ["word"]}
    response = _while_healthy(server, lambda http: http.post("/v1/chat/completions", json=_chat_body(
        max_tokens=40, response_format=_json_schema(schema))))
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    if response.json()["choices"][0]["finish_reason"] == "stop":
        assert len(json.loads(content)["word"]) <= 12


_leaf = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={
        "maxLength": st.integers(0, 10**6), "minLength": st.integers(0, 50), "pattern": st.sampled_from(
            ["^a+$", "^[a-z]{2,5}$", "^x{0,99999}$", "^(ab|cd)*$"])}),
    st.fixed_dictionaries({"type": st.sampled_from(["integer", "number"])}, optional={
        "minimum": st.integers(-10**20, 10**20), "maximum": st.integers(-10**20, 10**20)}),
    st.fixed_dictionaries({"type": st.sampled_from(["boolean", "null"])}),
    st.fixed_dictionaries({"enum": st.lists(st.text(max_size=5), min_size=1, max_size=3)}),
)
SCHEMAS = st.recursive(_leaf, lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("array"), "items": inner}, optional={
        "minItems": st.integers(0, 10**9), "maxItems": st.integers(0, 10**9)}),
    st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
        st.from_regex(r"[a-z]{1,6}", fullmatch=True), inner, max_size=4)}),
    st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=3)}),
), max_leaves=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, as_tool=st.booleans())
def test_generated_schemas_never_hurt_the_server(server, schema, as_tool):
    extra = _required_tool({"type": "object", "properties": {"v": schema}}) if as_tool else {
        "response_format": _json_schema(schema)}
    response = _while_healthy(server, lambda http: http.post("/v1/chat/completions", json=_chat_body(**extra)))
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        _error(response, response.status_code)


# ---- text that used to vanish
def test_tokens_longer_than_32_bytes_reach_the_client(openai_client):
    dashes = "-" * 64  # token 15069 of the demo vocabulary
    reply = openai_client.chat.completions.create(model=CHAT, messages=HI, max_tokens=3, temperature=0,
                                                  logit_bias={"15069": 100})
    assert reply.choices[0].message.content == dashes * 3
    stream = openai_client.chat.completions.create(model=CHAT, messages=HI, max_tokens=3, temperature=0,
                                                   logit_bias={"15069": 100}, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == dashes * 3


def test_characters_split_across_tokens_come_out_whole(openai_client):
    text = "😀日本語é🎉"
    request = {"model": CHAT, "messages": [{"role": "user", "content": f"Say {text}"}], "max_tokens": 60,
               "temperature": 0, "response_format": _json_schema({"type": "string", "pattern": f"^{text}$"})}
    whole = openai_client.chat.completions.create(**request).choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or ""
                       for chunk in openai_client.chat.completions.create(**request, stream=True) if chunk.choices)
    assert json.loads(whole) == text and streamed == whole and "\ufffd" not in streamed


# ---- queue
def test_max_queue_zero_serves_while_slots_are_free(launch):
    server = launch({"MAX_QUEUE": "0", "N_PARALLEL": "2"})
    for _ in range(2):
        reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(max_tokens=2), timeout=120)
        assert reply.status_code == 200, reply.text
    embedded = httpx.post(f"{server.base_url}/v1/embeddings", timeout=120,
                          json={"model": "smollm2-135m-embed", "input": "x"})
    assert embedded.status_code == 200, embedded.text


def _metric(server, name, **labels):
    return _samples(httpx.get(f"{server.base_url}/metrics").text).get((name, tuple(sorted(labels.items()))))


def test_requests_that_stop_waiting_leave_the_queue(launch):
    server = launch({"N_PARALLEL": "1", "QUEUE_TIMEOUT_S": "1"})
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(max_tokens=1)).status_code == 200
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                      json={**LONG, "max_tokens": 1900, "stream": True}) as running:
        lines = running.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)  # the one slot is taken
        timed_out = httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(), timeout=120)
        assert _error(timed_out, 503)["code"] == "queue_timeout" and timed_out.headers["retry-after"]
        assert _metric(server, "gguf_queue_depth", model=CHAT) == 0  # not left behind to run for nobody
        assert _metric(server, "gguf_slots_busy", model=CHAT) == 1  # while the long reply still runs
    assert wait_for(lambda: _metric(server, "gguf_slots_busy", model=CHAT) == 0)
    cancelled = _metric(server, "gguf_generations_total", model=CHAT, finish_reason="cancelled")
    assert cancelled == 2  # the one that timed out in the line, and the stream we left


def test_a_request_with_more_choices_than_the_line_holds_is_served(launch):
    """The line counts requests: one whose choices outnumber the slots and the line runs them in turn
    (before, each choice counted as a waiter: a 429 no retry could ever clear)."""
    server = launch({"MAX_QUEUE": "0", "N_PARALLEL": "1"})
    chat = httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(n=3, max_tokens=2), timeout=120)
    assert chat.status_code == 200, chat.text
    assert [choice["index"] for choice in chat.json()["choices"]] == [0, 1, 2]
    completion = httpx.post(f"{server.base_url}/v1/completions", timeout=120,
                            json={"model": CHAT, "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 2})
    assert completion.status_code == 200, completion.text
    assert sorted(choice["index"] for choice in completion.json()["choices"]) == list(range(6))


def test_choices_waiting_behind_their_own_request_do_not_time_out(launch):
    """QUEUE_TIMEOUT_S bounds the wait for a request's first slot; once it runs, its other choices and
    prompts follow in turn (before, the last of them timed out behind the first: a 503 after the work)."""
    server = launch({"N_PARALLEL": "1", "QUEUE_TIMEOUT_S": "1"})
    chat = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=300, json={**LONG, "max_tokens": 300, "n": 2})
    assert chat.status_code == 200, chat.text
    assert [choice["finish_reason"] for choice in chat.json()["choices"]] == ["length", "length"]
    completion = httpx.post(f"{server.base_url}/v1/completions", timeout=300, json={
        "model": CHAT, "prompt": ["Once upon a time", "The sea"], "max_tokens": 300, "temperature": 0,
        "logit_bias": LONG["logit_bias"]})
    assert completion.status_code == 200, completion.text
    assert wait_for(lambda: _metric(server, "gguf_slots_busy", model=CHAT) == 0)
    assert _metric(server, "gguf_generations_total", model=CHAT, finish_reason="cancelled") is None


def test_a_stream_starts_while_its_other_choices_wait(launch):
    """A stream answers as soon as its first choice runs, not once the last one has a slot."""
    server = launch({"N_PARALLEL": "1"})
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                      json={**LONG, "max_tokens": 1900, "n": 2, "stream": True}) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the response
        first = json.loads(next(line for line in lines if line.startswith("data: ")).removeprefix("data: "))
        assert [choice["index"] for choice in first["choices"]] == [0]
        assert _metric(server, "gguf_queue_depth", model=CHAT) == 1  # choice 1 still waits for the slot
    assert wait_for(lambda: _metric(server, "gguf_slots_busy", model=CHAT) == 0)
    assert wait_for(lambda: _metric(server, "gguf_queue_depth", model=CHAT) == 0)
    # the client left: the running choice and the waiting one both end, neither runs for nobody
    assert _metric(server, "gguf_generations_total", model=CHAT, finish_reason="cancelled") == 2


def test_a_client_that_leaves_the_queue_is_withdrawn(launch):
    server = launch({"N_PARALLEL": "1"})
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(max_tokens=1)).status_code == 200
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                      json={**LONG, "max_tokens": 1900, "stream": True}) as running:
        lines = running.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(), timeout=2)
        assert wait_for(lambda: _metric(server, "gguf_queue_depth", model=CHAT) == 0)
        assert _metric(server, "gguf_slots_busy", model=CHAT) == 1
        assert _metric(server, "gguf_generations_total", model=CHAT, finish_reason="cancelled") == 1


# ---- replies cut by the server say so
def test_a_stream_cut_by_shutdown_ends_with_an_error_event(launch):
    server = launch({"DRAIN_TIMEOUT_S": "1"})
    events = sigterm_during_a_stream(server, max_tokens=1900)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "model_unloaded" and error["type"] == "server_error"
    assert all(json.loads(event).get("choices", [{}])[0].get("finish_reason") is None for event in events[:-2])
    assert server.process.wait(300) == 0


def test_the_official_client_raises_on_a_cut_stream(launch):
    server = launch({"DRAIN_TIMEOUT_S": "1"})
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(**{**LONG, "max_tokens": 1900}, stream=True)
    with pytest.raises(openai.APIError, match="cut short"):
        for index, _chunk in enumerate(stream):
            if index == 1:
                server.process.send_signal(signal.SIGTERM)


# ---- start-up refuses settings that would crash llama.cpp
def test_a_batch_smaller_than_the_sequences_refuses_to_start(tmp_path):
    env = {**os.environ, "N_BATCH": "2", "N_PARALLEL": "4", "PORT": "1"}
    result = subprocess.run([sys.executable, "-m", "handler", "serve"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "N_BATCH=2" in result.stderr and "N_PARALLEL=4" in result.stderr


# ---- a worker that dies anyway comes back
def _children(pid):
    path = f"/proc/{pid}/task/{pid}/children"
    with contextlib.suppress(OSError), open(path) as listing:
        return [int(child) for child in listing.read().split()]
    return []


def test_a_killed_worker_is_respawned(launch):
    server = launch()
    (worker,) = _children(server.process.pid)
    os.kill(worker, signal.SIGKILL)
    assert wait_for(lambda: _children(server.process.pid) not in ([], [worker]), timeout=120)

    def serves():
        with contextlib.suppress(httpx.TransportError):
            return httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat_body(max_tokens=2),
                              timeout=120).status_code == 200
        return False

    assert wait_for(serves, timeout=120, interval=0.5)
    assert server.process.poll() is None
