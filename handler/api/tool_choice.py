"""`tools`, `tool_choice`, `parallel_tool_calls` and `response_format` → the request's `ToolUse` and
JSON-content schema, checked before any model is touched.

- tool_choice "none": no tools in the prompt, no calls;  "auto" (default): the model decides;
- "required" or {"type": "function", "function": {"name": …}}: the reply must be calls (to that
  function), whose arguments match its JSON schema: the model's chat format forces them;
- {"type": "allowed_tools", "allowed_tools": {"mode": "auto" | "required", "tools": […]}}: as that
  mode, with only the tools named there (the others are left out of the prompt, as "none" leaves
  out all);
- response_format json_object / json_schema: the content must be that JSON.
Every schema is bounded here (`schema_limits`), so a grammar bomb is a 400 before any work.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgspec

from handler.api.protocols.chat import ChatCompletionRequest
from handler.engine.schema_limits import SchemaLimitExceeded, check_schema
from handler.errors import InvalidRequest
from handler.formats.chat_format import ToolUse


def _named_function(choice: dict[str, Any], names: list[str]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest('tool_choice must be "none", "auto", "required", {"type": "function", "function": '
                             '{"name": ...}} or {"type": "allowed_tools", ...}', param="tool_choice")
    if name not in names:
        raise InvalidRequest(f"tool_choice names function '{name}', which is not in tools", param="tool_choice")
    return name


def _allowed_tools(choice: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The mode and the tools an `allowed_tools` choice leaves, in the order `tools` gives them."""
    allowed = choice.get("allowed_tools")
    mode = allowed.get("mode") if isinstance(allowed, dict) else None
    listed = allowed.get("tools") if isinstance(allowed, dict) else None
    if mode not in ("auto", "required") or not isinstance(listed, list) or not listed:
        raise InvalidRequest('allowed_tools needs a mode ("auto" or "required") and a list of tools',
                             param="tool_choice.allowed_tools")
    names = [tool["function"]["name"] for tool in tools]
    wanted = {_named_function(item if isinstance(item, dict) else {}, names) for item in listed}
    return mode, [tool for tool in tools if tool["function"]["name"] in wanted]


def _checked(schemas: dict[str, Any]) -> None:
    """Refuse schemas (request path → schema) beyond the limits of `schema_limits`."""
    try:
        for path, schema in schemas.items():
            check_schema(schema, path)
    except SchemaLimitExceeded as exc:
        raise InvalidRequest(str(exc), param=exc.path, code="schema_too_complex") from None


def _json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema the content must match ({} for any JSON object), or None for free text."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = response_format.get("json_schema") if response_format else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema object",
                                 param="response_format")
        _checked({"response_format.json_schema.schema": schema})
        return schema
    raise InvalidRequest(f"response_format type {kind!r} is not supported", param="response_format")


@attrs.frozen
class ToolPlan:
    tools: ToolUse
    json_schema: dict[str, Any] | None


def plan_tools(data: ChatCompletionRequest) -> ToolPlan:
    """What the request's tool and response-format fields decide (blocking: schemas are walked)."""
    tools = [msgspec.to_builtins(tool) for tool in data.tools or ()]
    for index, tool in enumerate(tools):
        if not isinstance(tool["function"].get("parameters", {}), dict):
            raise InvalidRequest("function parameters must be a JSON schema object",
                                 param=f"tools[{index}].function.parameters")
    offered = tools  # as the request lists them (error paths name their index)
    choice: str | dict[str, Any] = data.tool_choice if data.tool_choice is not None else "auto"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        choice, tools = _allowed_tools(choice, tools)
    names = [tool["function"]["name"] for tool in tools]
    # parallel_tool_calls=false, or one named function: at most one call (in the grammar and the parser).
    parallel = data.parallel_tool_calls is not False and not isinstance(choice, dict)
    json_schema = _json_schema(data.response_format)
    if choice == "none" or not tools:
        if choice not in ("none", "auto"):
            raise InvalidRequest("tool_choice requires tools", param="tool_choice")
        return ToolPlan(ToolUse(parallel=parallel), json_schema)
    if choice == "auto":
        return ToolPlan(ToolUse(tuple(tools), parallel=parallel), json_schema)
    forced = [_named_function(choice, names)] if isinstance(choice, dict) else names
    chosen = [tools[names.index(name)] for name in forced]
    _checked({f"tools[{offered.index(tool)}].function.parameters": tool["function"].get("parameters") or {}
              for tool in chosen})
    return ToolPlan(ToolUse(tuple(tools), mode="required", forced=tuple(forced), parallel=parallel), json_schema)
