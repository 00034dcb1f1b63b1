"""POST /v1/embeddings: every input shape, float and base64, dimensions, usage."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from tests.support.demo import tokenize

EMBED = "smollm2-135m-embed"
DIM = 576  # SmolLM2-135M's hidden size


def _norm(vector):
    return math.sqrt(sum(value * value for value in vector))


def test_string_input_float(http):
    response = http.post("/v1/embeddings", json={"model": EMBED, "input": "hello world", "encoding_format": "float"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == EMBED
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert len(item["embedding"]) == DIM
    assert _norm(item["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_openai_client_default_base64(openai_client):
    result = openai_client.embeddings.create(model=EMBED, input=["first text", "second text"])
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == DIM for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding


def test_base64_equals_float(http):
    floats = http.post("/v1/embeddings", json={"model": EMBED, "input": "same", "encoding_format": "float"}).json()
    encoded = http.post("/v1/embeddings", json={"model": EMBED, "input": "same", "encoding_format": "base64"}).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


def test_token_inputs_match_text(http, openai_client):
    text = http.post("/v1/embeddings", json={"model": EMBED, "input": "hello world"}).json()
    tokens = tokenize("hello world", add_bos=True)
    as_ids = http.post("/v1/embeddings", json={"model": EMBED, "input": tokens}).json()
    as_lists = http.post("/v1/embeddings", json={"model": EMBED, "input": [tokens, tokens]}).json()
    assert as_ids["data"][0]["embedding"] == pytest.approx(text["data"][0]["embedding"], abs=1e-5)
    assert len(as_lists["data"]) == 2
    assert as_lists["usage"]["prompt_tokens"] == 2 * len(tokens)


def test_dimensions_truncate_and_renormalise(openai_client):
    result = openai_client.embeddings.create(model=EMBED, input="short", dimensions=64)
    vector = result.data[0].embedding
    assert len(vector) == 64
    assert _norm(vector) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [[1, 2], "mixed"]}, "input"),
    ({"input": [[999999999]]}, "input"),
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": "x", "dimensions": 100000}, "dimensions"),
    ({"input": "too long " * 2000}, "input"),
])
def test_bad_inputs_are_400(http, body, param):
    response = http.post("/v1/embeddings", json={"model": EMBED, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_chat_model_refuses_embeddings(openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model="smollm2-135m", input="x")
