"""The model lists and model objects."""

from __future__ import annotations

import openai
import pytest


def test_list_all(openai_client):
    models = {model.id: model for model in openai_client.models.list()}
    assert {"smollm2-135m", "smollm2-135m-embed"} <= set(models)
    assert all(model.object == "model" and model.owned_by for model in models.values())


def test_list_by_kind(http):
    chat = http.get("/v1/models/chat").json()
    embeddings = http.get("/v1/models/embeddings").json()
    assert chat["object"] == embeddings["object"] == "list"
    assert {m["kind"] for m in chat["data"]} == {"chat"}
    assert {m["kind"] for m in embeddings["data"]} == {"embedding"}
    assert "smollm2-135m" in [m["id"] for m in chat["data"]]
    assert "smollm2-135m-embed" in [m["id"] for m in embeddings["data"]]


def test_retrieve_shows_state(http, openai_client):
    openai_client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=1)
    card = http.get("/v1/models/smollm2-135m").json()
    assert card["id"] == "smollm2-135m" and card["object"] == "model"
    assert card["downloaded"] is True and card["loaded"] is True and card["size"] > 0


def test_retrieve_with_the_openai_client(openai_client):
    assert openai_client.models.retrieve("smollm2-135m-embed").id == "smollm2-135m-embed"


@pytest.mark.parametrize("name", ["nope", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 10_000])
def test_unknown_model_is_404(http, name):
    response = http.get(f"/v1/models/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] in ("model_not_found", "not_found")


def test_unknown_model_in_requests_is_404(openai_client):
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found"
    assert raised.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")
