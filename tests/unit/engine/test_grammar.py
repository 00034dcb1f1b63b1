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
