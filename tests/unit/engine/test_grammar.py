import pytest

from handler.engine.grammar import SchemaError, json_grammar, tool_call_grammar

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}}


def test_tool_call_grammar_frames_each_function():
    grammar = tool_call_grammar([WEATHER, {"name": "noop"}], parallel=True)
    assert 'root ::= call ("\\n" call)*' in grammar
    assert '"<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": " tool0-arguments' in grammar
    assert "tool1-arguments" in grammar  # a function without parameters takes any object


def test_single_call_grammar():
    assert "root ::= call\n" in tool_call_grammar([WEATHER], parallel=False)


def test_json_grammar_has_a_root():
    assert json_grammar(None).count("root ::=") == 1
    assert json_grammar({"type": "array", "items": {"type": "integer"}}).count("root ::=") == 1


def test_unusable_schema_is_a_schema_error():
    with pytest.raises(SchemaError):
        json_grammar({"$ref": "#/definitions/missing"})


# ---- limits on what a schema may expand into (handler.engine.schema_limits)
from handler.engine.schema_limits import (  # noqa: E402
    MAX_GRAMMAR_BYTES,
    MAX_REPEAT,
    MAX_SCHEMA_DEPTH,
    SchemaLimitExceeded,
    check_grammar,
    check_schema,
)


@pytest.mark.parametrize(("schema", "where"), [
    ({"type": "string", "maxLength": 30000}, "s.maxLength"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000_000}, "s.minItems"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": MAX_REPEAT + 1}}},
     "s.properties.a.minLength"),
    ({"type": "integer", "minimum": -10**20}, "s.minimum"),
    ({"type": "string", "pattern": "^a{0,30000}$"}, "s.pattern"),
    ({"type": "string", "pattern": "x" * 5000}, "s.pattern"),
    ({"anyOf": [{"type": "string", "maxLength": 5000}]}, "s.anyOf[0].maxLength"),
])
def test_keywords_that_expand_are_bounded(schema, where):
    with pytest.raises(SchemaLimitExceeded) as refused:
        check_schema(schema, "s")
    assert refused.value.path == where


def test_nesting_and_size_are_bounded():
    deep: dict = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaLimitExceeded, match="nest"):
        check_schema(deep, "s")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    with pytest.raises(SchemaLimitExceeded, match="at most"):
        check_schema(wide, "s")


def test_bounded_schemas_pass_and_convert():
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": MAX_REPEAT},
                                               "tags": {"type": "array", "items": {"type": "string"},
                                                        "maxItems": 10}}}
    check_schema(schema, "s")
    check_grammar(json_grammar(schema), "s")


def test_the_finished_grammar_is_measured():
    with pytest.raises(SchemaLimitExceeded, match="bytes"):
        check_grammar('root ::= "' + "a" * MAX_GRAMMAR_BYTES + '"', "g")
    with pytest.raises(SchemaLimitExceeded, match="nests"):
        check_grammar("root ::= " + "(" * 5000 + '"a"' + ")" * 5000, "g")
    check_grammar('root ::= "((((" [(] "\\"(("', "g")  # parentheses in literals and classes do not count


# ---- forced calls in each family's syntax
from handler.formats.chat_format import CallSyntax  # noqa: E402


def test_mistral_syntax_wraps_the_calls_in_one_list():
    syntax = CallSyntax(before="[TOOL_CALLS][", separator=", ", after="]")
    grammar = tool_call_grammar([WEATHER], parallel=True, syntax=syntax)
    assert 'root ::= "[TOOL_CALLS][" call (", " call)* "]"' in grammar
    assert 'call ::= "{\\"name\\": \\"get_weather\\", \\"arguments\\": " tool0-arguments "}"' in grammar


def test_llama3_syntax_names_arguments_parameters():
    grammar = tool_call_grammar([WEATHER], parallel=False, syntax=CallSyntax(arguments_key="parameters"))
    assert '\\"parameters\\": " tool0-arguments "}"' in grammar and "root ::= call\n" in grammar


def test_json_strings_hold_no_raw_control_characters():
    """llama-cpp-python's converter let a string hold a raw newline: the reply was then not JSON."""
    grammar = json_grammar({"type": "object", "properties": {"colour": {"type": "string"}}})
    (char,) = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char.startswith(r'char ::= [^"\\\x7F\x00-\x1F] |')
