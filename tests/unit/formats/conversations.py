"""A table of conversations covering every branch of the Qwen3 template (used by the oracle tests)."""

from __future__ import annotations

import json

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "Ville / 城市"},
                                                      "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                         "parameters": {"type": "object", "properties": {}}}}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is the weather in Paris?"}


def call(name, arguments, *, as_object=False, call_id="call_1"):
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments if as_object else json.dumps(arguments)}}


def tool_reply(content, call_id="call_1"):
    return {"role": "tool", "tool_call_id": call_id, "content": content}


WEATHER_CALL = call("get_weather", {"city": "Paris"})
ONE_STEP = [USER, {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]}, tool_reply('{"temp": 21}')]

CONVERSATIONS: list[tuple[str, list, list | None, dict]] = [
    ("user only", [USER], None, {}),
    ("system and user", [SYSTEM, USER], None, {}),
    ("empty system", [{"role": "system", "content": ""}, USER], None, {}),
    ("multi-turn", [SYSTEM, USER, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "And Rome?"}], None, {}),
    ("no generation prompt", [USER, {"role": "assistant", "content": "Hi"}], None, {"add_generation_prompt": False}),
    ("thinking off", [USER], None, {"enable_thinking": False}),
    ("thinking on", [USER], None, {"enable_thinking": True}),
    ("tools without system", [USER], [WEATHER], {}),
    ("tools with system", [SYSTEM, USER], [WEATHER, TIME], {}),
    ("tools thinking off", [SYSTEM, USER], [WEATHER], {"enable_thinking": False}),
    ("non-ascii tool schema", [USER], [WEATHER], {}),
    ("content parts", [{"role": "user", "content": [{"type": "text", "text": "Look:"},
                                                  {"type": "text", "text": "part one"}]}], None, {}),
    ("call with string args", ONE_STEP, [WEATHER], {}),
    ("call with object args", [USER, {"role": "assistant", "content": "",
                                      "tool_calls": [call("get_weather", {"city": "Paris"}, as_object=True)]},
                               tool_reply("21C")], [WEATHER], {}),
    ("call with content", [USER, {"role": "assistant", "content": "Let me check.", "tool_calls": [WEATHER_CALL]},
                           tool_reply("21C")], [WEATHER], {}),
    ("two calls", [USER, {"role": "assistant", "content": "", "tool_calls": [
        WEATHER_CALL, call("get_time", {}, call_id="call_2")]}, tool_reply("21C"), tool_reply("12:00", "call_2")],
     [WEATHER, TIME], {}),
    ("two calls with content", [USER, {"role": "assistant", "content": "Checking both.", "tool_calls": [
        WEATHER_CALL, call("get_time", {}, call_id="call_2")]}, tool_reply("21C"), tool_reply("12:00", "call_2")],
     [WEATHER, TIME], {}),
    ("three tool replies in a row", [USER, {"role": "assistant", "content": "", "tool_calls": [
        WEATHER_CALL, WEATHER_CALL, WEATHER_CALL]}, tool_reply("a"), tool_reply("b"), tool_reply("c")], [WEATHER], {}),
    ("tool loop final answer", [*ONE_STEP, {"role": "assistant", "content": "It is 21C in Paris."}], [WEATHER],
     {"add_generation_prompt": False}),
    ("multi-step loop", [SYSTEM, *ONE_STEP, {"role": "assistant", "content": "", "tool_calls": [
        call("get_time", {}, call_id="call_2")]}, tool_reply("12:00", "call_2")], [WEATHER, TIME], {}),
    ("loop then new question", [*ONE_STEP, {"role": "assistant", "content": "21C."},
                                {"role": "user", "content": "Thanks! And Rome?"}], [WEATHER], {}),
    ("reasoning_content after last query", [USER, {"role": "assistant", "content": "", "reasoning_content":
                                                   "I should call the tool.", "tool_calls": [WEATHER_CALL]},
                                            tool_reply("21C")], [WEATHER], {}),
    ("reasoning_content before last query", [USER, {"role": "assistant", "content": "Sunny.",
                                                    "reasoning_content": "Easy."},
                                             {"role": "user", "content": "Sure?"}], None, {}),
    ("inline think after last query", [USER, {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nSunny."}],
     None, {"add_generation_prompt": False}),
    ("inline think before last query", [USER, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nSunny."},
                                        {"role": "user", "content": "ok"}], None, {}),
    ("last assistant without reasoning", [USER, {"role": "assistant", "content": "Sunny."}], None,
     {"add_generation_prompt": False}),
    ("empty reasoning_content", [USER, {"role": "assistant", "content": "Sunny.", "reasoning_content": ""},
                                 {"role": "user", "content": "ok"}], None, {}),
    ("user message that is a tool response", [{"role": "user", "content": "<tool_response>\nx\n</tool_response>"}],
     None, {}),
    ("later system message", [SYSTEM, USER, {"role": "system", "content": "Be brief."}], None, {}),
    ("tool message first", [tool_reply("orphan"), USER], None, {}),
    ("assistant prefill", [USER, {"role": "assistant", "content": "The weather"}], None, {"add_generation_prompt": False}),
    ("unicode and newlines", [{"role": "user", "content": "Ünïcödé ✓\n\nline two\n"}], None, {}),
    ("assistant reasoning between tool steps", [USER, {"role": "assistant", "content": "",
                                                       "reasoning_content": "step 1", "tool_calls": [WEATHER_CALL]},
                                                tool_reply("21C"), {"role": "assistant", "content": "",
                                                                    "reasoning_content": "step 2",
                                                                    "tool_calls": [call("get_time", {})]},
                                                tool_reply("noon")], [WEATHER, TIME], {}),
]
