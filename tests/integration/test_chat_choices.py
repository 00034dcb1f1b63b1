"""Chat completions with `logprobs` / `top_logprobs` and `n` > 1, on the real demo model, through the
official client (its stream parser included) and raw HTTP."""

from __future__ import annotations

import json

import pytest

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Tell me a short story about a cat."}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}


def test_logprobs_cover_the_content(openai_client):
    completion = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0,
                                                       logprobs=True, top_logprobs=3)
    choice = completion.choices[0]
    entries = choice.logprobs.content
    assert "".join(entry.token for entry in entries) == choice.message.content
    assert len(entries) == completion.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3 and isinstance(entry.bytes, list)
        alternatives = [alternative.logprob for alternative in entry.top_logprobs]
        assert alternatives == sorted(alternatives, reverse=True)
        assert entry.top_logprobs[0].logprob == entry.logprob  # greedy: the chosen token is the likeliest


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_spell_content_that_starts_or_ends_in_whitespace(openai_client, stream):
    """A reply cut just after a newline (here: newlines made likely, then a word, then newlines): its
    content keeps the whitespace the logprobs have (before, content was trimmed at both ends)."""
    from tests.support.demo import tokenize

    (newline,) = tokenize("\n")
    request = {"model": MODEL, "messages": ASK, "max_tokens": 6, "temperature": 0, "logprobs": True,
               "logit_bias": {str(newline): 12}}
    if stream:
        content = tokens = ""
        for chunk in openai_client.chat.completions.create(**request, stream=True):
            if chunk.choices:
                content += chunk.choices[0].delta.content or ""
                logprobs = chunk.choices[0].logprobs
                tokens += "".join(entry.token for entry in logprobs.content or []) if logprobs else ""
    else:
        choice = openai_client.chat.completions.create(**request).choices[0]
        content, tokens = choice.message.content, "".join(entry.token for entry in choice.logprobs.content)
    assert "\n" in content and content != content.strip()
    assert tokens == content


def test_logprobs_stream(openai_client):
    stream = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0,
                                                   logprobs=True, stream=True)
    content, tokens = "", ""
    for chunk in stream:
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs is not None:
                tokens += "".join(entry.token for entry in chunk.choices[0].logprobs.content)
    assert content and tokens == content


def test_no_logprobs_unless_asked(openai_client):
    completion = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4)
    assert completion.choices[0].logprobs is None


def test_top_logprobs_needs_logprobs(http):
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "top_logprobs": 2})
    assert response.status_code == 400 and response.json()["error"]["param"] == "top_logprobs"


def test_n_choices_with_a_seed_differ_and_reproduce(openai_client):
    def texts():
        completion = openai_client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=16,
                                                           temperature=1.2, seed=11)
        assert [choice.index for choice in completion.choices] == [0, 1, 2]
        return completion, [choice.message.content for choice in completion.choices]

    first, texts_first = texts()
    _, texts_again = texts()
    assert texts_again == texts_first and len(set(texts_first)) > 1
    single = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once


def test_n_choices_stream_by_index(openai_client):
    stream = openai_client.chat.completions.create(model=MODEL, messages=ASK, n=2, max_tokens=10, temperature=0,
                                                   stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts[0] and texts[0] == texts[1]  # greedy: the same reply twice
    assert set(finishes) == {0, 1} and all(finishes.values())
    assert usage.completion_tokens >= 2 and usage.prompt_tokens > 0


def test_n_choices_each_call_the_tool(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], n=2,
        tool_choice="required", parallel_tool_calls=False, max_tokens=40, temperature=0)
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls"
        assert json.loads(choice.message.tool_calls[0].function.arguments)["city"]


@pytest.mark.parametrize("n", [0, 17])
def test_n_out_of_range_is_400(http, n):
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "n": n})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"
