"""Bounds on the JSON schemas a request may turn into a grammar.

A schema keyword such as `maxLength: 30000` becomes a GBNF rule nested 30,000 levels deep, and
llama.cpp parses grammars recursively: the worker overflows its stack and dies. `minItems: 10**9`
makes the converter write gigabytes of grammar text. So every keyword that expands into grammar is
bounded here, before conversion, and the finished grammar is measured again before llama.cpp sees
it. Beyond a limit the request is refused, naming the keyword's path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MAX_REPEAT = 1000  # minLength, maxLength, minItems, maxItems, …, and {m,n} in patterns
MAX_SCHEMA_DEPTH = 32  # nesting of schema objects and lists
MAX_SCHEMA_NODES = 2000  # objects, lists and values in one schema
MAX_NUMBER_DIGITS = 15  # minimum / maximum (integer ranges become one rule per digit)
MAX_PATTERN_LENGTH = 1000
MAX_GRAMMAR_BYTES = 256 * 1024  # the whole grammar, every tool together
MAX_GRAMMAR_NESTING = 2 * MAX_REPEAT + 64  # parentheses in the GBNF text (llama.cpp parses them recursively)

REPEAT_KEYWORDS = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
                             "minContains", "maxContains"})
NUMBER_KEYWORDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class SchemaLimitExceeded(ValueError):
    """A schema (or the grammar built from it) is beyond what the server compiles."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} (at '{path}')")
        self.path = path


def _children(node: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield value, f"{path}.{key}"
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield value, f"{path}[{index}]"


def _check_keyword(key: str, value: Any, path: str) -> None:
    if key in REPEAT_KEYWORDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        if value > MAX_REPEAT:
            raise SchemaLimitExceeded(f"{key} may be at most {MAX_REPEAT}, got {value:g}", path)
    elif key in NUMBER_KEYWORDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        if abs(value) >= 10 ** MAX_NUMBER_DIGITS:
            raise SchemaLimitExceeded(f"{key} may have at most {MAX_NUMBER_DIGITS} digits", path)
    elif key == "pattern" and isinstance(value, str):
        if len(value) > MAX_PATTERN_LENGTH:
            raise SchemaLimitExceeded(f"pattern may be at most {MAX_PATTERN_LENGTH} characters", path)
        for match in _QUANTIFIER.finditer(value):
            if any(group and int(group) > MAX_REPEAT for group in match.groups()):
                raise SchemaLimitExceeded(f"pattern repetitions may be at most {MAX_REPEAT}", path)


def check_schema(schema: Any, path: str) -> None:
    """Raise `SchemaLimitExceeded` if `schema` (found at `path` in the request) is beyond the limits."""
    stack, nodes = [(schema, path, 0)], 0
    while stack:
        node, at, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaLimitExceeded(f"the schema may have at most {MAX_SCHEMA_NODES} values", path)
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaLimitExceeded(f"the schema may nest at most {MAX_SCHEMA_DEPTH} levels", at)
        if isinstance(node, dict):
            for key, value in node.items():
                _check_keyword(key, value, f"{at}.{key}")
        stack.extend((child, child_path, depth + 1) for child, child_path in _children(node, at))


def check_grammar(gbnf: str, path: str) -> None:
    """The finished grammar: total size and the deepest nesting llama.cpp's parser would recurse into."""
    if len(gbnf.encode()) > MAX_GRAMMAR_BYTES:
        raise SchemaLimitExceeded(f"the grammar built from these schemas exceeds {MAX_GRAMMAR_BYTES} bytes", path)
    if _nesting(gbnf) > MAX_GRAMMAR_NESTING:
        raise SchemaLimitExceeded(f"the grammar built from these schemas nests deeper than {MAX_GRAMMAR_NESTING}",
                                  path)


def _nesting(gbnf: str) -> int:
    """Deepest parenthesis nesting outside quoted literals and character classes."""
    depth = deepest = 0
    quote = bracket = escaped = False
    for char in gbnf:
        if escaped:
            escaped = False
        elif char == "\\" and (quote or bracket):
            escaped = True
        elif quote:
            quote = char != '"'
        elif bracket:
            bracket = char != "]"
        elif char == '"':
            quote = True
        elif char == "[":
            bracket = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest
