"""POST /v1/completions on the real demo model, with the official client and raw HTTP."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.demo import tokenize

MODEL = "smollm2-135m"
PROMPT = "The capital of France is"


def test_a_completion(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    (choice,) = completion.choices
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert choice.text and choice.finish_reason in ("stop", "length") and choice.index == 0
    assert completion.usage.prompt_tokens == len(tokenize(PROMPT, add_bos=True))
    assert completion.usage.completion_tokens <= 8


def test_default_max_tokens_is_openais(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert completion.usage.completion_tokens <= 16


def test_token_prompts_equal_text_prompts(openai_client):
    text = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    tokens = openai_client.completions.create(model=MODEL, prompt=tokenize(PROMPT, add_bos=True), max_tokens=8,
                                              temperature=0)
    assert tokens.choices[0].text == text.choices[0].text


def test_several_prompts_and_n(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt=[PROMPT, "One, two, three,"], n=2,
                                                  max_tokens=6, temperature=0)
    assert [choice.index for choice in completion.choices] == [0, 1, 2, 3]
    texts = [choice.text for choice in completion.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]  # greedy: n equal copies
    assert completion.usage.prompt_tokens == len(tokenize(PROMPT, add_bos=True)) + len(
        tokenize("One, two, three,", add_bos=True))


def _scored(openai_client, **options):
    return openai_client.completions.create(model=MODEL, prompt=PROMPT, echo=True, logprobs=3, temperature=0,
                                            **options)


def test_echo_with_logprobs_scores_every_prompt_token(openai_client):
    """How evaluation harnesses read log-likelihoods: the prompt's tokens with their log probabilities
    (the first has none), each equal to what the model gives that token read one position at a time."""
    tokens = tokenize(PROMPT, add_bos=True)
    completion = _scored(openai_client, max_tokens=0)
    (choice,) = completion.choices
    logprobs = choice.logprobs
    assert choice.text == PROMPT and choice.finish_reason == "length" and completion.usage.completion_tokens == 0
    assert len(logprobs.tokens) == len(tokens) == completion.usage.prompt_tokens
    assert "".join(logprobs.tokens) == PROMPT and logprobs.text_offset[0] == 0
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    for position in range(1, len(tokens)):
        # The token at `position` forced (its logit biased up), its reported log probability is still the
        # model's own: the same value, computed from a prompt that ends just before it.
        alone = openai_client.completions.create(model=MODEL, prompt=tokens[:position], max_tokens=1, logprobs=3,
                                                 temperature=0, logit_bias={str(tokens[position]): 100})
        assert alone.choices[0].logprobs.token_logprobs[0] == pytest.approx(logprobs.token_logprobs[position],
                                                                            abs=2e-3)
        assert len(logprobs.top_logprobs[position]) == 3
        assert max(logprobs.top_logprobs[position].values()) >= logprobs.token_logprobs[position] - 1e-6


def test_echo_with_logprobs_then_generated_tokens(openai_client):
    scored = _scored(openai_client, max_tokens=0).choices[0].logprobs
    completion = _scored(openai_client, max_tokens=4, n=2)
    plain = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    for choice in completion.choices:  # the second choice copies the first's prompt: its scores too
        prompt_part = len(scored.tokens)
        assert choice.text == PROMPT + plain.choices[0].text
        assert choice.logprobs.token_logprobs[0] is None
        assert choice.logprobs.token_logprobs[1:prompt_part] == pytest.approx(scored.token_logprobs[1:], abs=1e-6)
        assert len(choice.logprobs.tokens) == prompt_part + completion.usage.completion_tokens // 2
        assert choice.logprobs.text_offset[prompt_part] == len(PROMPT)


def test_streamed_echo_with_logprobs(openai_client):
    scored = _scored(openai_client, max_tokens=0).choices[0].logprobs
    chunks = list(_scored(openai_client, max_tokens=3, stream=True))
    first = chunks[0].choices[0]
    assert first.text == PROMPT and first.logprobs.tokens == scored.tokens
    assert first.logprobs.token_logprobs[1:] == pytest.approx(scored.token_logprobs[1:], abs=1e-6)
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices).startswith(PROMPT)


def test_n_with_a_seed_gives_different_reproducible_choices(openai_client):
    def texts():
        completion = openai_client.completions.create(model=MODEL, prompt="My favourite animal is", n=3,
                                                      max_tokens=12, temperature=1.5, seed=7)
        return [choice.text for choice in completion.choices]

    first = texts()
    assert texts() == first and len(set(first)) > 1


def test_echo_and_stop(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                                                  echo=True, stop=["."])
    assert completion.choices[0].text.startswith(PROMPT) and "." not in completion.choices[0].text[len(PROMPT):]


def test_logprobs_legacy_shape(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0,
                                                  logprobs=2)
    choice = completion.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == 6
    assert logprobs.text_offset[0] == 0 and all(value <= 0 for value in logprobs.token_logprobs)
    for token, best in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert len(best) <= 2 and max(best, key=best.get) == token  # greedy picks the most likely


def test_streaming_interleaves_choices(openai_client):
    stream = openai_client.completions.create(model=MODEL, prompt=[PROMPT, "One, two, three,"], max_tokens=6,
                                              temperature=0, stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    whole = openai_client.completions.create(model=MODEL, prompt=[PROMPT, "One, two, three,"], max_tokens=6,
                                             temperature=0)
    assert [texts[0], texts[1]] == [choice.text for choice in whole.choices]
    assert set(finishes) == {0, 1} and usage.completion_tokens == whole.usage.completion_tokens


def test_suffix_without_fill_in_the_middle_tokens_is_a_clear_400(http):
    vocab_has_fim = all(len(tokenize(tag, special=True)) == 1 for tag in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "def add(a, b):", "suffix": "\n",
                                                  "max_tokens": 4})
    if vocab_has_fim:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400 and response.json()["error"]["param"] == "suffix"


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[10**8]]}, "prompt"),
    ({"prompt": "a", "best_of": 3}, "best_of"),
    ({"prompt": "a", "n": 99}, "n"),
    ({"prompt": "a", "logprobs": 21}, "logprobs"),
    ({"prompt": "a " * 5000}, "prompt"),
])
def test_bad_requests_are_openai_errors(http, body, param):
    response = http.post("/v1/completions", json={"model": MODEL, "max_tokens": 2, **body})
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "")


def test_an_embedding_model_is_refused(openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.completions.create(model="smollm2-135m-embed", prompt="a")


def test_raw_stream_ends_with_done(http):
    with http.stream("POST", "/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 3,
                                                      "stream": True}) as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "text_completion" for line in events[:-1])


def test_usage_says_how_many_prompt_tokens_were_reused(openai_client):
    prompt = "The lighthouse keeper climbed the stairs every evening at dusk, counting the steps (completions reuse test)."
    first = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0)
    again = openai_client.completions.create(model=MODEL, prompt=prompt + " Then", max_tokens=4, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens
    assert first.usage.prompt_tokens - 1 <= again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens
