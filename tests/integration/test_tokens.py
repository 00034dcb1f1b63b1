"""/tokenize and /detokenize on the real demo model, against what the chat route really reads."""

from __future__ import annotations

import pytest

from handler.formats.gguf_template import render_gguf_template
from tests.support.demo import chat_template, tokenize

CHAT, EMBED = "smollm2-135m", "smollm2-135m-embed"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


def test_a_prompt(http):
    body = http.post("/tokenize", json={"model": CHAT, "prompt": "Hello world"}).json()
    assert body["tokens"] == tokenize("Hello world", add_bos=True) and body["count"] == len(body["tokens"])
    assert body["max_model_len"] > 0


@pytest.mark.parametrize("tools", [None, [WEATHER]])
def test_a_conversation_counts_what_the_chat_route_reads(http, tools):
    tokenized = http.post("/tokenize", json={"model": CHAT, "messages": CONVERSATION, "tools": tools}).json()
    extra = {"tools": tools} if tools else {}
    chat = http.post("/v1/chat/completions", json={"model": CHAT, "messages": CONVERSATION, "max_tokens": 1,
                                                   **extra}).json()
    assert tokenized["count"] == chat["usage"]["prompt_tokens"]


def test_without_the_generation_prompt(http):
    with_prompt = http.post("/tokenize", json={"model": CHAT, "messages": CONVERSATION}).json()["tokens"]
    without = http.post("/tokenize", json={"model": CHAT, "messages": CONVERSATION,
                                           "add_generation_prompt": False}).json()["tokens"]
    assert with_prompt[:len(without)] == without and len(with_prompt) > len(without)


def test_detokenize_round_trips(http):
    tokens = http.post("/tokenize", json={"model": CHAT, "messages": CONVERSATION}).json()["tokens"]
    text = http.post("/detokenize", json={"model": CHAT, "tokens": tokens}).json()["prompt"]
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_an_embedding_model_tokenizes_prompts(http):
    assert http.post("/tokenize", json={"model": EMBED, "prompt": "Hello"}).json()["count"] >= 1


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/tokenize", {"model": CHAT}, "prompt"),
    ("/tokenize", {"model": CHAT, "prompt": "a", "messages": CONVERSATION}, "prompt"),
    ("/tokenize", {"model": EMBED, "messages": CONVERSATION}, "messages"),
    ("/detokenize", {"model": CHAT, "tokens": [10**8]}, "tokens"),
    ("/detokenize", {"model": CHAT, "tokens": [-1]}, "tokens"),
])
def test_bad_requests_are_400(http, path, body, param):
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "")


def test_unknown_model_is_404(http):
    assert http.post("/tokenize", json={"model": "nope", "prompt": "a"}).status_code == 404


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "Hi there"}],
    CONVERSATION,
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
], ids=["no system message", "a system message", "three turns"])
def test_the_demo_models_prompt_is_its_own_templates(http, messages):
    """Byte for byte what the GGUF's template renders, which adds SmolLM2's default system prompt to a
    conversation that has none (before, that system turn was missing: not the prompt the model knows)."""
    expected = render_gguf_template(chat_template(), messages, add_generation_prompt=True)
    tokens = http.post("/tokenize", json={"model": CHAT, "messages": messages}).json()["tokens"]
    assert tokens == tokenize(expected, special=True)
