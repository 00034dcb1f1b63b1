"""Wire schema of POST /v1/responses (stateless), and its translation to a chat completion request.

The function keeps no state between requests: `previous_response_id`, `store: true`, `background`
and built-in tools (web search, file search, …) are refused with a 400 saying so."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from handler.api.protocols.chat import ChatCompletionRequest, PositiveInt, Probability
from handler.errors import InvalidRequest

Item = dict[str, Any]


class TextFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`text.format`: plain text, any JSON object, or JSON matching `schema`."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    input: Annotated[str, Meta(min_length=1)] | Annotated[list[Item], Meta(min_length=1)]
    instructions: str | None = None
    tools: list[Item] | None = None
    tool_choice: str | Item | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    stream: bool = False
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


_STATEFUL = {"previous_response_id": "previous_response_id", "store": "store: true", "background": "background: true"}


def _refuse_state(data: ResponsesRequest) -> None:
    for field, words in _STATEFUL.items():
        if getattr(data, field):
            raise InvalidRequest(f"{words} is not supported: this server keeps no state between requests; send the "
                                 "whole conversation in `input`", param=field, code="unsupported_parameter")


def _text(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of text parts", param=where)
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text") or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"content parts of type {kind!r} are not supported; only text parts are",
                                 param=f"{where}[{index}]", code="unsupported_content")
        parts.append({"type": "text", "text": part["text"]})
    return parts


def _messages(data: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": data.instructions}] if data.instructions else []
    items = [{"role": "user", "content": data.input}] if isinstance(data.input, str) else data.input
    for index, item in enumerate(items):
        where, kind = f"input[{index}]", item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest("a message's role must be user, system, developer or assistant",
                                     param=f"{where}.role")
            messages.append({"role": role, "content": _text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)  # parallel calls belong to one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else msgspec.json.encode(output).decode()})
        elif kind != "reasoning":  # earlier reasoning is not shown to the model again (as chat templates do)
            raise InvalidRequest(f"input items of type {kind!r} are not supported", param=where)
    return messages


def _tools(data: ResponsesRequest) -> list[dict[str, Any]] | None:
    tools = []
    for index, tool in enumerate(data.tools or ()):
        if tool.get("type") != "function":
            raise InvalidRequest(f"built-in tools ({tool.get('type')!r}) are not available here; only function tools",
                                 param=f"tools[{index}]", code="unsupported_tool")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        tools.append({"type": "function", "function": function})
    return tools or None


def _tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("type") == "allowed_tools" and isinstance(choice.get("tools"), list):
        listed = [{"type": "function", "function": {"name": tool.get("name")}} if isinstance(tool, dict) else tool
                  for tool in choice["tools"]]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode"), "tools": listed}}
    raise InvalidRequest('tool_choice must be "none", "auto", "required", {"type": "function", "name": ...} or '
                         '{"type": "allowed_tools", "mode": ..., "tools": [...]}', param="tool_choice")


def _response_format(text: TextOptions | None) -> dict[str, Any] | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        if fmt.schema is None:
            raise InvalidRequest("a json_schema format needs its schema", param="text.format.schema")
        return {"type": "json_schema", "json_schema": {"name": fmt.name or "output", "schema": fmt.schema}}
    return {"type": fmt.type}


def _thinking(reasoning: ReasoningOptions | None) -> bool | None:
    if reasoning is None:
        return None
    return reasoning.effort not in ("none", "minimal")


def as_chat_request(data: ResponsesRequest) -> ChatCompletionRequest:
    """The chat completion this Responses request asks for (its checks, prompt and sampling are chat's)."""
    _refuse_state(data)
    body = {"model": data.model, "messages": _messages(data), "tools": _tools(data),
            "tool_choice": _tool_choice(data.tool_choice), "parallel_tool_calls": data.parallel_tool_calls,
            "max_tokens": data.max_output_tokens, "temperature": data.temperature, "top_p": data.top_p,
            "response_format": _response_format(data.text), "enable_thinking": _thinking(data.reasoning)}
    try:
        return msgspec.convert({key: value for key, value in body.items() if value is not None}, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"input: {exc}", param="input") from None
