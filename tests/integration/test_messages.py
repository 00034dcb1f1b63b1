"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API) on the real demo model,
through the official `anthropic` client (create, stream, a tool-use loop, count_tokens) and raw HTTP."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

MODEL = "smollm2-135m"
GREEDY = {"temperature": 0}  # sampling fields the SDK no longer types: sent as extra body fields
ASK = [{"role": "user", "content": "Name three colours."}]
WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="not-needed", timeout=120, max_retries=0)


def test_a_text_message(claude):
    message = claude.messages.create(model=MODEL, max_tokens=24, messages=ASK, extra_body=GREEDY)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason in ("end_turn", "max_tokens")
    (block,) = message.content
    assert block.type == "text" and block.text
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24


def test_the_reply_equals_the_chat_routes(claude, openai_client):
    message = claude.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY, system="Answer in one word.",
                                     messages=[{"role": "user", "content": [{"type": "text",
                                                                             "text": "What colour is the sky?"}]}])
    chat = openai_client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=12, messages=[
            {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What colour is the sky?"}])
    assert message.content[0].text == chat.choices[0].message.content
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == chat.usage.prompt_tokens
    assert usage.output_tokens == chat.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_a_prefill_is_continued(claude, http, stream):
    """A conversation that ends with the assistant's text: the reply continues it (before, it started a
    new turn after it) and holds only the continuation, the completion of the prompt /tokenize gives."""
    prefilled = [*ASK, {"role": "assistant", "content": "The three colours are"}]
    request = {"model": MODEL, "max_tokens": 12, "messages": prefilled, "extra_body": GREEDY}
    if stream:
        with claude.messages.stream(**request) as events:
            text = events.get_final_message().content[0].text
    else:
        text = claude.messages.create(**request).content[0].text
    prompt = http.post("/tokenize", json={"model": MODEL, "messages": prefilled, "continue_final_message": True})
    completion = http.post("/v1/completions", json={"model": MODEL, "prompt": prompt.json()["tokens"],
                                                    "max_tokens": 12, "temperature": 0})
    assert text == completion.json()["choices"][0]["text"]
    assert http.post("/detokenize", json={"model": MODEL, "tokens": prompt.json()["tokens"]}).json()[
        "prompt"].endswith("<|im_start|>assistant\nThe three colours are")


def test_max_tokens_and_stop_sequences(claude):
    cut = claude.messages.create(model=MODEL, max_tokens=3, messages=ASK, extra_body=GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.stop_sequence is None and cut.usage.output_tokens == 3
    full = claude.messages.create(model=MODEL, max_tokens=24, messages=ASK, extra_body=GREEDY).content[0].text
    word = full.split()[1]
    stopped = claude.messages.create(model=MODEL, max_tokens=24, messages=ASK, extra_body=GREEDY,
                                     stop_sequences=["zzzz", word])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert full.startswith(stopped.content[0].text) and word not in stopped.content[0].text


def test_a_stream_adds_up_to_the_message(claude):
    expected = claude.messages.create(model=MODEL, max_tokens=20, messages=ASK, extra_body=GREEDY)
    with claude.messages.stream(model=MODEL, max_tokens=20, messages=ASK, extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.index("content_block_start") < kinds.index("content_block_stop") < kinds.index("message_delta")
    assert final.content[0].text == expected.content[0].text and final.stop_reason == expected.stop_reason
    assert final.usage.output_tokens == expected.usage.output_tokens
    prompt = expected.usage.input_tokens + expected.usage.cache_read_input_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == prompt


def test_raw_events_are_named_and_ordered(server):
    with httpx.stream("POST", f"{server.base_url}/v1/messages", timeout=120, json={
            "model": MODEL, "max_tokens": 8, "messages": ASK, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [frame for frame in response.read().decode().split("\n\n") if frame]
    events = []
    for frame in frames:
        name, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append(payload)
    assert [event["type"] for event in events][:2] == ["message_start", "ping"]
    assert events[-2]["type"] == "message_delta" and events[-2]["usage"]["output_tokens"] > 0
    assert events[0]["message"]["usage"]["input_tokens"] > 0


def test_a_tool_use_loop(claude):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = claude.messages.create(model=MODEL, max_tokens=60, extra_body=GREEDY, messages=ask, tools=[WEATHER],
                                     tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert message.stop_reason == "tool_use"
    (use,) = [block for block in message.content if block.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input["city"], str) and use.id
    follow_up = claude.messages.create(model=MODEL, max_tokens=16, extra_body=GREEDY, tools=[WEATHER], messages=[
        *ask, {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees"}]}])
    assert follow_up.stop_reason in ("end_turn", "max_tokens", "tool_use") and follow_up.content


def test_a_streamed_tool_use(claude):
    with claude.messages.stream(model=MODEL, max_tokens=60, extra_body=GREEDY, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    (use,) = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and isinstance(use.input["city"], str)


def test_count_tokens_is_the_prompt_the_message_reads(claude):
    for extra in ({}, {"tools": [WEATHER], "system": "Be brief."}):
        counted = claude.messages.count_tokens(model=MODEL, messages=ASK, **extra)
        message = claude.messages.create(model=MODEL, max_tokens=1, messages=ASK, **extra)
        usage = message.usage
        assert counted.input_tokens == usage.input_tokens + usage.cache_read_input_tokens > 0


def test_errors_are_anthropic_shaped(claude, http):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    for body, where in [
        ({"messages": ASK}, "max_tokens"),  # required
        ({"max_tokens": 4, "messages": [{"role": "user", "content": [image]}]}, "image"),
        ({"max_tokens": 4, "messages": ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
         "server tools"),
        ({"max_tokens": 4, "messages": ASK, "temperature": 1.5}, "temperature"),
        ({"max_tokens": 4, "messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "absent"}},
         "absent"),
    ]:
        response = http.post("/v1/messages", json={"model": MODEL, **body})
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error", error
        assert where in error["error"]["message"], error
    broken = http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


def test_cache_control_and_metadata_are_accepted(claude):
    message = claude.messages.create(
        model=MODEL, max_tokens=4, metadata={"user_id": "someone"},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}], messages=ASK)
    assert message.content and message.usage.output_tokens > 0


def test_x_api_key_is_accepted_beside_bearer(launch):
    server = launch({"API_KEY": "s3cret-key"})
    good = anthropic.Anthropic(base_url=server.base_url, api_key="s3cret-key", max_retries=0)
    assert good.messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0
    assert good.messages.create(model=MODEL, max_tokens=2, messages=ASK).content
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=2, messages=ASK)
    assert refused.value.body["error"]["type"] == "authentication_error"
    chat = httpx.post(f"{server.base_url}/v1/chat/completions", headers={"x-api-key": "s3cret-key"},
                      json={"model": MODEL, "max_tokens": 2, "messages": ASK}, timeout=60)
    assert chat.status_code == 200
