"""`tools`, `tool_choice`, `parallel_tool_calls` and `response_format` → prompt tools and a grammar.

- tool_choice "none": no tools in the prompt, no calls;  "auto" (default): the model decides;
- "required" or {"type": "function", "function": {"name": …}}: generation is constrained to
  `<tool_call>` blocks whose arguments match the function's JSON schema;
- response_format json_object / json_schema: the content is constrained to that JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgspec

from handler.api.chat_protocol import ChatCompletionRequest
from handler.engine.grammar import SchemaError, json_grammar, tool_call_grammar
from handler.engine.schema_limits import SchemaLimitExceeded, check_grammar, check_schema
from handler.errors import InvalidRequest


def _named_function(choice: dict[str, Any], names: list[str]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest('tool_choice must be "none", "auto", "required" or '
                             '{"type": "function", "function": {"name": ...}}', param="tool_choice")
    if name not in names:
        raise InvalidRequest(f"tool_choice names function '{name}', which is not in tools", param="tool_choice")
    return name


def _response_format_grammar(response_format: dict[str, Any] | None) -> str | None:
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_grammar(None)
    if kind == "json_schema":
        spec = response_format.get("json_schema") if response_format else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema object",
                                 param="response_format")
        return _checked(lambda: json_grammar(schema), "response_format",
                        {"response_format.json_schema.schema": schema})
    raise InvalidRequest(f"response_format type {kind!r} is not supported", param="response_format")


def _checked(build: Callable[[], str], param: str, schemas: dict[str, Any]) -> str:
    """Build a grammar from `schemas` (request path → schema) within the limits of `schema_limits`.
    Called off the event loop: even bounded schemas take a while to convert."""
    try:
        for path, schema in schemas.items():
            check_schema(schema, path)
        grammar = build()
        check_grammar(grammar, param)
        return grammar
    except SchemaLimitExceeded as exc:
        raise InvalidRequest(str(exc), param=exc.path, code="schema_too_complex") from None
    except SchemaError as exc:
        raise InvalidRequest(str(exc), param=param) from None


@attrs.frozen
class ToolPlan:
    """What a request's tool fields decide, decided once: the tools the prompt shows, the grammar
    that constrains the output (or None), and whether more than one call is allowed."""

    tools: list[dict[str, Any]] | None
    grammar: str | None
    parallel: bool


def plan_tools(data: ChatCompletionRequest) -> ToolPlan:
    """The `ToolPlan` for this request (blocking: building a grammar takes a while)."""
    tools = [msgspec.to_builtins(tool) for tool in data.tools or ()]
    for index, tool in enumerate(tools):
        if not isinstance(tool["function"].get("parameters", {}), dict):
            raise InvalidRequest("function parameters must be a JSON schema object",
                                 param=f"tools[{index}].function.parameters")
    choice = data.tool_choice if data.tool_choice is not None else "auto"
    names = [tool["function"]["name"] for tool in tools]
    # parallel_tool_calls=false, or one named function: at most one call (in the grammar and the parser).
    parallel = data.parallel_tool_calls is not False and not isinstance(choice, dict)
    if choice == "none" or not tools:
        if choice not in ("none", "auto"):
            raise InvalidRequest("tool_choice requires tools", param="tool_choice")
        return ToolPlan(None, _response_format_grammar(data.response_format), parallel)
    if choice == "auto":
        return ToolPlan(tools, _response_format_grammar(data.response_format), parallel)
    functions = [tool["function"] for tool in tools]
    if isinstance(choice, dict):
        name = _named_function(choice, names)
        functions = [function for function in functions if function["name"] == name]
    schemas = {f"tools[{names.index(function['name'])}].function.parameters": function.get("parameters") or {}
               for function in functions}
    return ToolPlan(tools, _checked(lambda: tool_call_grammar(functions, parallel=parallel), "tools", schemas),
                    parallel)
