"""Wire schemas of POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API), and
the one mapping of a Messages request to the chat completion it asks for: the same prompt, tools,
constraints, sampling and queue as the chat route.

Blocks: text; tool_use and thinking (assistant turns); tool_result (user turns, text only). Images,
documents, server tools and MCP servers are a 400; `cache_control` marks are accepted and ignored
(prompt reuse here is automatic). A conversation that ends with the assistant's text is a prefill:
the reply continues that text, and holds only what was generated."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from handler.api.protocols.chat import ChatCompletionRequest, PositiveInt, Probability
from handler.errors import InvalidRequest
from handler.formats.content import content_text

Blocks = list[dict[str, Any]]
_THINKING = {"enabled": True, "disabled": False}  # "adaptive" and omitted: the model's own default


class MessageParam(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | Blocks


class _Conversation(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    system: str | Blocks | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's name for output_config.format
    mcp_servers: list[Any] | None = None


class CountTokensRequest(_Conversation, kw_only=True):
    pass


class MessagesRequest(_Conversation, kw_only=True):
    max_tokens: PositiveInt
    stop_sequences: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(max_length=16)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False


def _unsupported(kind: Any, where: str) -> InvalidRequest:
    return InvalidRequest(f"content blocks of type {kind!r} are not supported here; text, tool_use, tool_result "
                          "and thinking are", param=where, code="unsupported_content")


def _text_part(block: dict[str, Any], where: str) -> dict[str, str]:
    if block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise _unsupported(block.get("type"), where)
    return {"type": "text", "text": block["text"]}


def _text_parts(blocks: Blocks, where: str) -> list[dict[str, str]]:
    return [_text_part(block, f"{where}[{index}]") for index, block in enumerate(blocks)]


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, content = block.get("tool_use_id"), block.get("content", "")
    if not isinstance(call_id, str):
        raise InvalidRequest("a tool_result needs its tool_use_id", param=f"{where}.tool_use_id")
    if not isinstance(content, (str, list)):
        raise InvalidRequest("a tool_result's content must be a string or text blocks", param=f"{where}.content")
    return {"role": "tool", "tool_call_id": call_id,
            "content": content if isinstance(content, str) else _text_parts(content, f"{where}.content")}


def _user_turn(blocks: Blocks, where: str) -> list[dict[str, Any]]:
    """Tool results first (each a tool message, as chat templates expect), then the user's text."""
    results, texts = [], []
    for index, block in enumerate(blocks):
        kind, at = block.get("type"), f"{where}[{index}]"
        if kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            texts.append(_text_part(block, at))
    return [*results, *([{"role": "user", "content": texts}] if texts or not results else [])]


def _assistant_turn(blocks: Blocks, where: str) -> dict[str, Any]:
    texts, calls, thinking = [], [], []
    for index, block in enumerate(blocks):
        kind, at = block.get("type"), f"{where}[{index}]"
        if kind == "tool_use":
            if not isinstance(block.get("name"), str) or not isinstance(block.get("input", {}), dict):
                raise InvalidRequest("a tool_use needs a name and an input object", param=at)
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": {
                "name": block["name"], "arguments": msgspec.json.encode(block.get("input", {})).decode()}})
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind != "redacted_thinking":
            texts.append(_text_part(block, at))
    turn: dict[str, Any] = {"role": "assistant", "content": texts or None}
    if calls:
        turn["tool_calls"] = calls
    if thinking:
        turn["reasoning_content"] = "".join(thinking)
    return turn


def _messages(data: _Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if data.system:
        system = data.system if isinstance(data.system, str) else _text_parts(data.system, "system")
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(data.messages):
        where = f"messages[{index}].content"
        if not message.content and (message.role == "user" or index < len(data.messages) - 1):
            raise InvalidRequest(f"messages.{index}: all messages must have non-empty content except for the "
                                 "optional final assistant message", param=where)
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
        elif message.role == "user":
            messages.extend(_user_turn(message.content, where))
        else:
            messages.append(_assistant_turn(message.content, where))
    final = messages[-1]
    if final["role"] == "assistant" and not content_text(final.get("content")) and not final.get("tool_calls"):
        messages.pop()  # an empty final assistant turn: the reply starts a turn of its own
    return messages


def _ends_in_prefill(messages: list[dict[str, Any]]) -> bool:
    """Whether the conversation ends with the assistant's text for the reply to continue. A text that
    ends in whitespace is refused as Anthropic refuses it (the reply's first token would carry it)."""
    if not messages or messages[-1]["role"] != "assistant":  # none left: the request's validation says so
        return False
    text = content_text(messages[-1].get("content"))
    if text != text.rstrip():
        raise InvalidRequest("final assistant content cannot end with trailing whitespace", param="messages")
    return True


def _tools(data: _Conversation) -> list[dict[str, Any]] | None:
    if data.mcp_servers:
        raise InvalidRequest("MCP servers are not available here; declare client tools instead",
                             param="mcp_servers", code="unsupported_tool")
    tools = []
    for index, tool in enumerate(data.tools or ()):
        if tool.get("type", "custom") != "custom":
            raise InvalidRequest(f"server tools ({tool.get('type')!r}) are not available here; only client tools "
                                 "with an input_schema", param=f"tools[{index}]", code="unsupported_tool")
        if not isinstance(tool.get("input_schema"), dict):
            raise InvalidRequest("a tool needs its input_schema (a JSON schema object)",
                                 param=f"tools[{index}].input_schema")
        function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    return tools or None


def _tool_choice(choice: dict[str, Any] | None) -> Any:
    kind = (choice or {}).get("type")
    if choice is None or kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest('tool_choice must be {"type": "auto"}, {"type": "any"}, {"type": "none"} or '
                         '{"type": "tool", "name": ...}', param="tool_choice")


def _response_format(data: _Conversation) -> dict[str, Any] | None:
    fmt = (data.output_config or {}).get("format") or data.output_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest('the output format must be {"type": "json_schema", "schema": {...}}',
                             param="output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _thinking(thinking: dict[str, Any] | None) -> bool | None:
    return _THINKING.get(str((thinking or {}).get("type")))


def as_chat_request(data: _Conversation) -> ChatCompletionRequest:
    """The chat completion this Messages request asks for (a token count asks for its prompt only)."""
    messages = _messages(data)
    body: dict[str, Any] = {
        "model": data.model, "messages": messages, "continue_final_message": _ends_in_prefill(messages),
        "tools": _tools(data), "tool_choice": _tool_choice(data.tool_choice),
        "response_format": _response_format(data), "enable_thinking": _thinking(data.thinking)}
    if data.tool_choice and data.tool_choice.get("disable_parallel_tool_use") is True:
        body["parallel_tool_calls"] = False
    if isinstance(data, MessagesRequest):
        body.update(max_tokens=data.max_tokens, stop=data.stop_sequences, temperature=data.temperature,
                    top_p=data.top_p, top_k=data.top_k)
    try:
        return msgspec.convert({key: value for key, value in body.items() if value is not None}, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"messages: {exc}", param="messages") from None
