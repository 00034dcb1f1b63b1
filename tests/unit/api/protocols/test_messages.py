"""A Messages request → the chat completion it asks for: the one mapping the route runs."""

from __future__ import annotations

import msgspec
import pytest

from handler.api.protocols.messages import CountTokensRequest, MessagesRequest, as_chat_request
from handler.errors import InvalidRequest

TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"},
        "cache_control": {"type": "ephemeral"}}


def _chat(**body):
    request = msgspec.convert({"model": "m", "max_tokens": 8, **body}, MessagesRequest)
    return msgspec.to_builtins(as_chat_request(request))


def test_system_tool_use_and_tool_result_become_chat_messages():
    chat = _chat(system=[{"type": "text", "text": "Be brief."}], tools=[TOOL], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "x"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21 C"}]},
            {"type": "text", "text": "And tomorrow?"}]}])
    system, user, assistant, result, follow_up = chat["messages"]
    assert system == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert user == {"role": "user", "content": "Weather in Oslo?"}
    assert assistant["reasoning_content"] == "Use the tool." and assistant["content"] == [
        {"type": "text", "text": "Checking."}]
    assert assistant["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]
    assert result == {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "21 C"}]}
    assert follow_up == {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                               "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("choice", "expected", "parallel"), [
    ({"type": "auto"}, "auto", None),
    ({"type": "any"}, "required", None),
    ({"type": "none"}, "none", None),
    ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
     {"type": "function", "function": {"name": "get_weather"}}, False),
])
def test_tool_choice(choice, expected, parallel):
    chat = _chat(tools=[TOOL], tool_choice=choice, messages=[{"role": "user", "content": "hi"}])
    assert chat["tool_choice"] == expected and chat.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize(("thinking", "enabled"), [
    (None, None), ({"type": "enabled", "budget_tokens": 2048}, True), ({"type": "disabled"}, False),
    ({"type": "adaptive"}, None)])
def test_thinking_is_the_models_reasoning_switch(thinking, enabled):
    chat = _chat(messages=[{"role": "user", "content": "hi"}], **({"thinking": thinking} if thinking else {}))
    assert chat.get("enable_thinking") == enabled


def test_sampling_stops_and_structured_output():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = _chat(messages=[{"role": "user", "content": "hi"}], temperature=0.5, top_p=0.9, top_k=20,
                 stop_sequences=["###"], output_config={"format": {"type": "json_schema", "schema": schema}})
    assert (chat["temperature"], chat["top_p"], chat["top_k"], chat["stop"], chat["max_tokens"]) == (
        0.5, 0.9, 20, ["###"], 8)
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_a_token_count_needs_no_max_tokens():
    request = msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, CountTokensRequest)
    assert msgspec.to_builtins(as_chat_request(request))["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "bash_20250124", "name": "bash"}]},
     "tools[0]"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "x"}]}, "tools[0].input_schema"),
    ({"messages": [{"role": "user", "content": "hi"}], "mcp_servers": [{"url": "x"}]}, "mcp_servers"),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "messages[0].content[0].tool_use_id"),
    ({"messages": [{"role": "user", "content": "hi"}], "output_config": {"format": {"type": "xml"}}},
     "output_config.format"),
])
def test_what_is_not_supported_is_a_clear_400(body, param):
    with pytest.raises(InvalidRequest) as refused:
        _chat(**body)
    assert refused.value.param == param


@pytest.mark.parametrize(("last", "continued"), [
    ({"role": "assistant", "content": "The answer is"}, True),
    ({"role": "assistant", "content": [{"type": "text", "text": "{"}]}, True),
    ({"role": "user", "content": "and?"}, False),
])
def test_a_final_assistant_text_is_a_prefill(last, continued):
    messages = [{"role": "user", "content": "hi"}, *([{"role": "assistant", "content": "Hello."}] if
                                                    last["role"] == "user" else []), last]
    assert _chat(messages=messages)["continue_final_message"] is continued


def test_an_empty_final_assistant_turn_is_dropped():
    chat = _chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}])
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and chat["continue_final_message"] is False


@pytest.mark.parametrize(("messages", "index"), [
    ([{"role": "user", "content": ""}], 0),
    ([{"role": "user", "content": []}], 0),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "x"}], 1),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": []}], 2),
])
def test_an_empty_message_other_than_a_final_assistant_turn_is_refused(messages, index):
    """As Anthropic refuses it: the model would be shown a turn with nothing in it."""
    with pytest.raises(InvalidRequest, match=f"^messages.{index}: all messages must have non-empty content") as refused:
        _chat(messages=messages)
    assert refused.value.param == f"messages[{index}].content"


def test_a_prefill_ending_in_whitespace_is_refused():
    with pytest.raises(InvalidRequest, match="trailing whitespace"):
        _chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is\n"}])
