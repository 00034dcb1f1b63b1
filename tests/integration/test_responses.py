"""POST /v1/responses (stateless) on the real demo model: the official client's `responses.create`,
its stream parsers (`responses.stream`, `create(stream=True)`), and raw HTTP."""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "smollm2-135m"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"], "additionalProperties": False}}


def test_a_text_response(openai_client):
    response = openai_client.responses.create(model=MODEL, input="Name three colours.", max_output_tokens=24,
                                              temperature=0)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_instructions_and_items_equal_the_chat_route(openai_client):
    response = openai_client.responses.create(
        model=MODEL, instructions="Answer in one word.", temperature=0, max_output_tokens=12,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What colour is the sky?"}]}])
    chat = openai_client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=12, messages=[
            {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What colour is the sky?"}])
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens


def test_cut_by_length_is_incomplete(openai_client):
    response = openai_client.responses.create(model=MODEL, input="Tell me a long story.", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def _call(openai_client):
    response = openai_client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                              tool_choice="required", parallel_tool_calls=False, temperature=0,
                                              max_output_tokens=60)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    return response, calls[0]


def test_a_function_call_loop(openai_client):
    response, call = _call(openai_client)
    follow_up = openai_client.responses.create(
        model=MODEL, tools=[WEATHER], temperature=0, max_output_tokens=16,
        input=[{"role": "user", "content": "What is the weather in Paris?"}, *[item.model_dump() for item in
                                                                              response.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}])
    assert follow_up.output_text


def test_named_function_choice(openai_client):
    response = openai_client.responses.create(model=MODEL, input="Weather?", tools=[WEATHER], temperature=0,
                                              tool_choice={"type": "function", "name": "get_weather"},
                                              max_output_tokens=60)
    assert [item.type for item in response.output] == ["function_call"]


def test_allowed_tools_choice(openai_client):
    time = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    response = openai_client.responses.create(
        model=MODEL, input="Weather?", tools=[WEATHER, time], temperature=0, max_output_tokens=60,
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]})
    assert {(item.type, item.name) for item in response.output} == {("function_call", "get_time")}


def test_json_schema_text_format(openai_client):
    schema = {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"],
              "additionalProperties": False}
    response = openai_client.responses.create(
        model=MODEL, input="A cat, as JSON.", temperature=0, max_output_tokens=30,
        text={"format": {"type": "json_schema", "name": "animal", "schema": schema}})
    assert isinstance(json.loads(response.output_text)["legs"], int)


def test_the_stream_helper_builds_the_same_response(openai_client):
    # The SDK's helper builds a final response only from `response.completed`: a reply that ends itself.
    with openai_client.responses.stream(model=MODEL, input="What is 2+2?", max_output_tokens=40,
                                        temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] in (
        "response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text and final.output_text
    whole = openai_client.responses.create(model=MODEL, input="What is 2+2?", max_output_tokens=40, temperature=0)
    assert whole.output_text == final.output_text


def test_a_streamed_function_call(openai_client):
    stream = openai_client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER],
                                            tool_choice="required", parallel_tool_calls=False, temperature=0,
                                            max_output_tokens=60, stream=True)
    events = list(stream)
    types = [event.type for event in events]
    assert types.index("response.output_item.added") < types.index("response.function_call_arguments.delta") < \
        types.index("response.function_call_arguments.done") < types.index("response.output_item.done")
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments)["city"]
    assert events[-1].response.output[0].type == "function_call"


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"input": [{"type": "computer_call"}]}, "input[0]"),
])
def test_what_a_stateless_server_cannot_do_is_a_400(http, extra, param):
    response = http.post("/v1/responses", json={"model": MODEL, "input": "hi", **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_client_raises_on_a_400(openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.responses.create(model=MODEL, input="hi", previous_response_id="resp_1")


@pytest.mark.parametrize(("text", "param"), [
    ({"format": "json"}, "text.format"), ("json", "text"), ({"format": {"type": "yaml"}}, "text.format.type"),
    ({"format": {"type": "json_schema", "name": "x"}}, "text.format.schema"),
])
def test_a_malformed_text_option_is_a_400_naming_it(http, text, param):
    response = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 2, "text": text})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_json_schema_format_is_echoed_and_followed(http):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}}, "required": ["colour"]}
    text = {"format": {"type": "json_schema", "name": "colour", "schema": schema}}
    response = http.post("/v1/responses", json={"model": MODEL, "input": "Name a colour.", "max_output_tokens": 40,
                                                "temperature": 0, "text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == text and "colour" in json.loads(body["output"][0]["content"][0]["text"])
