"""Tool calling through every chat format on real models: the demo model rendered by its own GGUF
template (a ChatML template that knows nothing of tools) and by a manifest `chat_template` (a file,
and inline text), and Gemma 3 270M, a base model with no template, given one in the manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO_FILE, GEMMA_PATH, REPO
from tests.integration.conftest import RunningServer, start_server

ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"timezone": {"type": "string", "maxLength": 24}}, "required": ["timezone"]}}}
# A template of our own (no tools, no tool role), given in the manifest: the generic format must
# still carry tools, calls and results through it.
TURNS_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Gemma-style turns of our own (alternating user/model, the system text inside the first user turn).
GEMMA_TURNS = (
    "{{ bos_token }}{% set system = messages[0].content + '\n\n' if messages[0].role == 'system' else '' %}"
    "{% for m in messages if m.role != 'system' %}{% if (m.role == 'user') != loop.first and loop.first %}"
    "{{ raise_exception('the first turn must be the user\\'s') }}{% endif %}<start_of_turn>"
    "{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ system if loop.first else '' }}{{ m.content }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _manifest(directory: Path) -> Path:
    template_file = directory / "turns.jinja"
    template_file.write_text(TURNS_TEMPLATE)
    source = str(REPO / "models" / DEMO_FILE)
    manifest = directory / "manifest.toml"
    manifest.write_text(f"""
[[models]]
name = "demo-gguf"
source = "{source}"
options = {{ chat_format = "gguf" }}

[[models]]
name = "demo-file-template"
source = "{source}"
options = {{ chat_template = "turns.jinja" }}

[[models]]
name = "demo-inline-template"
source = "{source}"
options = {{ chat_template = {json.dumps(TURNS_TEMPLATE)} }}

[[models]]
name = "gemma3-270m"
source = "{GEMMA_PATH}"
options = {{ chat_template = {json.dumps(GEMMA_TURNS)}, n_ctx = 2048 }}
""")
    return manifest


@pytest.fixture(scope="module")
def formats_server(tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path,
                   gemma_model_path: Path) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("formats")
    running = start_server(directory, {"MODELS_MANIFEST": str(_manifest(directory)), "N_PARALLEL": "2"})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(formats_server: RunningServer):
    from openai import OpenAI

    return OpenAI(base_url=f"{formats_server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)


MODELS = ["demo-gguf", "demo-file-template", "demo-inline-template", "gemma3-270m"]


@pytest.mark.parametrize("model", MODELS)
def test_required_tool_call_on_any_template(client, model):
    # A base model never learned to stop after a call: with parallel calls allowed it writes more.
    completion = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice="required",
                                                parallel_tool_calls=model != "gemma3-270m", max_tokens=80,
                                                temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    (call, *_) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("c", "f")


@pytest.mark.parametrize("model", MODELS)
def test_named_tool_call_streams_on_any_template(client, model):
    stream = client.chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER, TIME], max_tokens=80, temperature=0, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    content, names, arguments, finish = "", [], "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or ():
            names += [part.function.name] if part.function.name else []
            arguments += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and names == ["get_time"] and not content.strip()
    assert isinstance(json.loads(arguments)["timezone"], str)


@pytest.mark.parametrize("model", MODELS)
def test_tool_loop_through_a_template_without_tools(client, model):
    first = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=80, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    final = client.chat.completions.create(model=model, messages=history, tools=[WEATHER], max_tokens=16,
                                           temperature=0, tool_choice="none")
    assert final.choices[0].message.content and final.choices[0].message.tool_calls is None


def test_json_schema_response_on_a_gguf_template(client):
    schema = {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"],
              "additionalProperties": False}
    completion = client.chat.completions.create(
        model="demo-gguf", messages=[{"role": "user", "content": "A cat, as JSON."}], max_tokens=30, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema}})
    assert isinstance(json.loads(completion.choices[0].message.content)["legs"], int)


def test_gemma_answers_through_its_manifest_template(client):
    completion = client.chat.completions.create(
        model="gemma3-270m", max_tokens=12, temperature=0,
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}])
    assert completion.choices[0].message.content and "<start_of_turn>" not in completion.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_messages_tool_loop_on_any_template(formats_server, model):
    """The Messages API carries tools, tool_use and tool_result blocks through every chat format, and
    its call equals the chat route's (one path: the same prompt, grammar and parser)."""
    import anthropic

    claude = anthropic.Anthropic(base_url=formats_server.base_url, api_key="unused", timeout=120, max_retries=0)
    function = WEATHER["function"]
    tool = {"name": function["name"], "description": function["description"], "input_schema": function["parameters"]}
    ask = [{"role": "user", "content": ASK[0]["content"]}]
    message = claude.messages.create(model=model, max_tokens=80, messages=ask, tools=[tool],
                                     tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                     extra_body={"temperature": 0})
    (use,) = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use" and set(use.input) == {"city", "unit"}
    final = claude.messages.create(
        model=model, max_tokens=16, tools=[tool], tool_choice={"type": "none"}, extra_body={"temperature": 0},
        messages=[*ask, {"role": "assistant", "content": [block.model_dump() for block in message.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": json.dumps({"temperature": 21})}]}])
    assert [block.type for block in final.content] == ["text"] and final.content[0].text
