"""`plan_tools`: what tools, tool_choice and response_format decide, before any model is touched."""

from __future__ import annotations

import msgspec
import pytest

from handler.api.protocols.chat import ChatCompletionRequest
from handler.api.tool_choice import plan_tools
from handler.errors import InvalidRequest


def _function(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


TOOLS = [_function("get_weather"), _function("get_time"), _function("send_mail")]


def _plan(tool_choice, **extra):
    return plan_tools(msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                       "tools": TOOLS, "tool_choice": tool_choice, **extra}, ChatCompletionRequest))


def _allowed(mode: str, *names: str) -> dict:
    return {"type": "allowed_tools", "allowed_tools": {
        "mode": mode, "tools": [{"type": "function", "function": {"name": name}} for name in names]}}


def test_allowed_tools_auto_shows_only_those_tools():
    tools = _plan(_allowed("auto", "send_mail", "get_weather")).tools
    assert tools.mode == "auto" and [tool["function"]["name"] for tool in tools.tools] == ["get_weather", "send_mail"]


def test_allowed_tools_required_forces_a_call_to_one_of_them():
    tools = _plan(_allowed("required", "get_time", "send_mail"), parallel_tool_calls=False).tools
    assert tools.mode == "required" and tools.forced == ("get_time", "send_mail") and not tools.parallel
    assert tools.names == {"get_time", "send_mail"}


@pytest.mark.parametrize(("choice", "param"), [
    (_allowed("auto", "nope"), "tool_choice"),
    (_allowed("sometimes", "get_time"), "tool_choice.allowed_tools"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}, "tool_choice.allowed_tools"),
    ({"type": "allowed_tools"}, "tool_choice.allowed_tools"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": ["get_time"]}}, "tool_choice"),
])
def test_a_bad_allowed_tools_choice_is_a_400(choice, param):
    with pytest.raises(InvalidRequest) as raised:
        _plan(choice)
    assert raised.value.param == param


def test_a_schema_error_names_the_tool_where_the_request_lists_it():
    too_long = {"type": "function", "function": {"name": "deep", "parameters": {"type": "string", "maxLength": 30000}}}
    with pytest.raises(InvalidRequest) as raised:
        plan_tools(msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                    "tools": [*TOOLS, too_long], "tool_choice": _allowed("required", "deep")},
                                   ChatCompletionRequest))
    assert raised.value.param == "tools[3].function.parameters.maxLength"
