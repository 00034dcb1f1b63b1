"""GBNF grammars that constrain generation: tool calls in Qwen3 markup, and JSON content.

Built with llama-cpp-python's JSON-schema converter, so the argument rules are the ones llama.cpp
itself would build; we only add the `<tool_call>` framing around them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter


class SchemaError(ValueError):
    """A JSON schema the grammar converter cannot use."""


def _converter() -> SchemaConverter:
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: SchemaConverter, schema: Mapping[str, Any], name: str) -> str:
    """Add the rules for `schema` under `name` ("" names the grammar's root rule)."""
    try:
        resolved = converter.resolve_refs(dict(schema), name or "root")
        return converter.visit(resolved, name)
    except (KeyError, TypeError, ValueError, AssertionError, RecursionError) as exc:
        raise SchemaError(f"unsupported JSON schema: {exc!r}") from None


def _literal(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid GBNF literal


def tool_call_grammar(functions: Sequence[Mapping[str, Any]], *, parallel: bool) -> str:
    """One `<tool_call>` block (or several when `parallel`) calling one of `functions` with valid arguments."""
    converter = _converter()
    alternatives = []
    for index, function in enumerate(functions):
        schema = function.get("parameters") or {"type": "object"}
        arguments_rule = _visit(converter, schema, f"tool{index}-arguments")
        opening = _literal(f'<tool_call>\n{{"name": "{function["name"]}", "arguments": ')
        alternatives.append(f"{opening} {arguments_rule} {_literal(chr(10).join(['}', '</tool_call>']))}")
    calls = "call (\"\\n\" call)*" if parallel else "call"
    return converter.format_grammar() + f"\ncall ::= {' | '.join(alternatives)}\nroot ::= {calls}\n"


def json_grammar(schema: Mapping[str, Any] | None) -> str:
    """JSON content matching `schema`, or any JSON object when there is none."""
    converter = _converter()
    _visit(converter, schema or {"type": "object"}, "")
    return converter.format_grammar()
