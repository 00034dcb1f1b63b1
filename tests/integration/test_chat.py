"""POST /v1/chat/completions against the real server and the real demo model."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.demo import tokenize

CHAT = "smollm2-135m"
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]


def test_non_stream(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=24, temperature=0)
    assert completion.object == "chat.completion"
    assert completion.model == CHAT
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_gives_length(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=3, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_max_completion_tokens_is_honoured(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_completion_tokens=2)
    assert completion.usage.completion_tokens == 2


def test_seed_at_temperature_zero_repeats(openai_client):
    runs = [openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=16, temperature=0, seed=7)
            for _ in range(2)]
    assert runs[0].choices[0].message.content == runs[1].choices[0].message.content


def test_seed_with_sampling_repeats(openai_client):
    runs = [openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=16, temperature=1.0,
                                                  seed=1234) for _ in range(2)]
    assert runs[0].choices[0].message.content == runs[1].choices[0].message.content


def test_stop_sequence_ends_the_reply(openai_client):
    full = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    stop = text.split()[2]  # a word the model is known to produce
    cut = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]  # as generated, up to the stop string
    assert stop not in cut.choices[0].message.content


def test_stream_with_usage(openai_client):
    stream = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=12, temperature=0,
                                                   stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    whole = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=12, temperature=0)
    assert streamed == whole.choices[0].message.content


def test_stream_without_usage_has_no_usage_chunk(openai_client):
    chunks = list(openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4, stream=True))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_raw_sse_framing(http):
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [event for event in raw.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        json.loads(event.removeprefix("data: "))


def test_content_parts_and_developer_role(openai_client):
    completion = openai_client.chat.completions.create(model=CHAT, max_tokens=4, messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}])
    assert completion.choices[0].message.content


def test_sampling_options_are_accepted(http):
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 4, "temperature": 0.5, "top_p": 0.9, "top_k": 20,
            "min_p": 0.1, "presence_penalty": 0.5, "frequency_penalty": 0.5, "repeat_penalty": 1.1,
            "logit_bias": {"28": -100}, "user": "tester", "n": 1}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


def test_logit_bias_bans_a_token(openai_client):
    first = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=1, temperature=0)
    word = first.choices[0].message.content
    banned = openai_client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=1, temperature=0,
                                                   logit_bias={str(t): -100 for t in tokenize(word)})
    assert banned.choices[0].message.content != word


def test_context_overflow_is_a_400(openai_client):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello " * 3000}])
    assert raised.value.code == "context_length_exceeded"
    assert raised.value.body["param"] == "messages"


def test_embedding_model_refuses_chat(openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="smollm2-135m-embed", messages=HELLO)


def test_usage_says_how_many_prompt_tokens_were_reused(openai_client):
    """`usage.prompt_tokens_details.cached_tokens`: a follow-up turn reuses the first turn's KV state."""
    first = [{"role": "user", "content": "Describe a lighthouse keeper's morning in three sentences (cached-tokens test)."}]
    reply = openai_client.chat.completions.create(model=CHAT, messages=first, max_tokens=12, temperature=0)
    follow_up = [*first, {"role": "assistant", "content": reply.choices[0].message.content},
                 {"role": "user", "content": "And the evening?"}]
    again = openai_client.chat.completions.create(model=CHAT, messages=follow_up, max_tokens=4, temperature=0)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert reply.usage.prompt_tokens <= cached < again.usage.prompt_tokens
