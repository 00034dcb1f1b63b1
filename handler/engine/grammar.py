"""GBNF grammars that constrain generation: forced tool calls in a format's own syntax, and JSON content.

Built with llama-cpp-python's JSON-schema converter, so the argument rules are the ones llama.cpp
itself would build; the chat format's `CallSyntax` says what frames them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from handler.formats.chat_format import CallSyntax, Constraint, ForcedCalls, JsonContent

QWEN3_SYNTAX = CallSyntax(open="<tool_call>\n", close="\n</tool_call>")


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


# llama-cpp-python's converter lets a JSON string hold raw control characters (llama.cpp's own
# converter does not): a reply could then not be parsed as JSON. Its `char` rule is tightened.
_LOOSE_CHAR, _STRICT_CHAR = r'char ::= [^"\\] |', r'char ::= [^"\\\x7F\x00-\x1F] |'


def _rules(converter: SchemaConverter) -> str:
    return converter.format_grammar().replace(_LOOSE_CHAR, _STRICT_CHAR)


def _sequence(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def tool_call_grammar(functions: Sequence[Mapping[str, Any]], *, parallel: bool,
                      syntax: CallSyntax = QWEN3_SYNTAX) -> str:
    """A call (or several when `parallel`) to one of `functions` with valid arguments, written in `syntax`."""
    converter = _converter()
    alternatives = []
    for index, function in enumerate(functions):
        arguments_rule = _visit(converter, function.get("parameters") or {"type": "object"}, f"tool{index}-arguments")
        opening = _literal(f'{syntax.open}{{"name": "{function["name"]}", "{syntax.arguments_key}": ')
        alternatives.append(f"{opening} {arguments_rule} {_literal('}' + syntax.close)}")
    calls = f"call ({_literal(syntax.separator)} call)*" if parallel else "call"
    root = _sequence(_literal(syntax.before) if syntax.before else "", calls,
                     _literal(syntax.after) if syntax.after else "")
    return _rules(converter) + f"\ncall ::= {' | '.join(alternatives)}\nroot ::= {root}\n"


def json_grammar(schema: Mapping[str, Any] | None) -> str:
    """JSON content matching `schema`, or any JSON object when there is none."""
    converter = _converter()
    _visit(converter, schema or {"type": "object"}, "")
    return _rules(converter)


def constraint_grammar(constraint: Constraint) -> str:
    if isinstance(constraint, ForcedCalls):
        return tool_call_grammar(constraint.functions, parallel=constraint.parallel, syntax=constraint.syntax)
    assert isinstance(constraint, JsonContent)
    return json_grammar(constraint.schema)
