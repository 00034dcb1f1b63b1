"""Tool calling end to end with the demo model: SmolLM2 was not trained for tools, so every valid call
here comes from the grammar path (tool_choice "required" or a named function)."""

from __future__ import annotations

import json

import openai
import pytest

CHAT = "smollm2-135m"
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}


def _valid_weather_arguments(arguments: str) -> None:
    parsed = json.loads(arguments)
    assert set(parsed) == {"city", "unit"}
    assert isinstance(parsed["city"], str) and parsed["unit"] in ("c", "f")


def test_required_returns_a_schema_valid_call(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER],
                                                       tool_choice="required", max_tokens=120, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name == "get_weather"
        _valid_weather_arguments(call.function.arguments)
    assert len({call.id for call in choice.message.tool_calls}) == len(choice.message.tool_calls)


def test_required_streams_tool_call_deltas(openai_client):
    stream = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="required",
                                                   max_tokens=120, temperature=0, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        delta = chunk.choices[0].delta
        assert not (delta.content or "").strip() or "<tool_call>" not in delta.content
        for part in delta.tool_calls or ():
            entry = calls.setdefault(part.index, {"id": None, "name": None, "arguments": ""})
            if part.id:
                assert entry["id"] is None and part.function.name  # the name comes with the first delta
                entry["id"], entry["name"] = part.id, part.function.name
            entry["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls
    for entry in calls.values():
        assert entry["name"] == "get_weather"
        _valid_weather_arguments(entry["arguments"])


def test_named_function_and_no_parallel_calls(openai_client):
    completion = openai_client.chat.completions.create(
        model=CHAT, messages=ASK, tools=[WEATHER, TIME], max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    assert isinstance(json.loads(call.function.arguments)["timezone"], str)


def test_allowed_tools_required_calls_one_of_them(openai_client, http):
    """OpenAI's `allowed_tools` choice: only the tools it names are offered (before, a 400)."""
    allowed = {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}}
    completion = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER, TIME], max_tokens=120,
                                                       temperature=0, tool_choice=allowed)
    assert {call.function.name for call in completion.choices[0].message.tool_calls} == {"get_time"}
    body = {"model": CHAT, "messages": ASK, "tools": [WEATHER, TIME]}
    offered = http.post("/tokenize", json={**body, "tools": [TIME]}).json()["count"]
    auto = {"type": "allowed_tools", "allowed_tools": {**allowed["allowed_tools"], "mode": "auto"}}
    reply = http.post("/v1/chat/completions", json={**body, "tool_choice": auto, "max_tokens": 1}).json()
    assert reply["usage"]["prompt_tokens"] == offered  # the prompt shows get_time only


def test_parallel_false_gives_one_call(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER, TIME],
                                                       tool_choice="required", parallel_tool_calls=False,
                                                       max_tokens=120, temperature=0)
    assert len(completion.choices[0].message.tool_calls) == 1


def test_parallel_false_in_auto_mode_keeps_the_first_call(openai_client):
    completion = openai_client.chat.completions.create(
        model=CHAT, max_tokens=4, temperature=0, tools=[WEATHER], parallel_tool_calls=False,
        messages=[*ASK, {"role": "assistant", "content": "Calling now."}])
    assert len(completion.choices[0].message.tool_calls or []) <= 1


def test_none_means_no_calls(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="none",
                                                       max_tokens=16, temperature=0)
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_full_tool_loop(openai_client):
    first = openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="required",
                                                  parallel_tool_calls=False, max_tokens=120, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "unit": "c"})}]
    final = openai_client.chat.completions.create(model=CHAT, messages=history, tools=[WEATHER], max_tokens=24,
                                                  temperature=0)
    assert final.choices[0].message.content


def test_json_object_response_format(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                                                       response_format={"type": "json_object"}, max_tokens=60, temperature=0)
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_json_schema_response_format(openai_client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "legs": {"type": "integer"}},
              "required": ["name", "legs"], "additionalProperties": False}
    completion = openai_client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "A cat, as JSON."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema}})
    assert completion.choices[0].finish_reason == "stop"
    parsed = json.loads(completion.choices[0].message.content)
    assert set(parsed) == {"name", "legs"} and isinstance(parsed["legs"], int)


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
])
def test_bad_tool_requests_are_400(http, extra, param):
    response = http.post("/v1/chat/completions", json={"model": CHAT, "messages": ASK, **extra})
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "")


@pytest.mark.parametrize("thinking", [{"chat_template_kwargs": {"enable_thinking": False}}, {"enable_thinking": False}])
def test_enable_thinking_is_accepted(http, thinking):
    response = http.post("/v1/chat/completions", json={"model": CHAT, "messages": ASK, "max_tokens": 4, **thinking})
    assert response.status_code == 200, response.text


def test_openai_client_sees_an_absent_tool_choice_as_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER],
                                              tool_choice={"type": "function", "function": {"name": "nope"}})


NOW = {"type": "function", "function": {"name": "get_now", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_by_max_tokens_leaks_no_markup(openai_client, stream):
    """Parallel calls allowed and the turn kept from ending: the grammar makes the model call again and
    again until max_tokens cuts a call short. The whole calls come back as tool_calls, the cut one is
    dropped, and no `<tool_call>` markup reaches content (before, the cut call was returned as text)."""
    from tests.support.demo import end_of_turn_bias

    request = {"model": CHAT, "messages": [{"role": "user", "content": "What time is it? Use the tool."}],
               "tools": [NOW], "tool_choice": "required", "parallel_tool_calls": True, "max_tokens": 40,
               "temperature": 0, "logit_bias": end_of_turn_bias()}
    if stream:
        content, calls, finish = "", {}, None
        for chunk in openai_client.chat.completions.create(**request, stream=True):
            delta = chunk.choices[0].delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                calls.setdefault(call.index, "")
                calls[call.index] += call.function.name or ""
            finish = chunk.choices[0].finish_reason or finish
        names = list(calls.values())
    else:
        choice = openai_client.chat.completions.create(**request).choices[0]
        content, finish = choice.message.content or "", choice.finish_reason
        names = [call.function.name for call in choice.message.tool_calls or []]
    assert finish == "length"
    assert names and set(names) == {"get_now"}
    assert "<tool_call" not in content and "get_now" not in content
