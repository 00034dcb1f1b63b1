"""The model lists and model objects."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest


def test_list_all(openai_client):
    models = {model.id: model for model in openai_client.models.list()}
    assert {"smollm2-135m", "smollm2-135m-embed"} <= set(models)
    assert all(model.object == "model" and model.owned_by for model in models.values())


def test_the_anthropic_client_reads_the_same_models(server, http):
    """Anthropic's model objects and page (before, `type`, `display_name`, `created_at` and the page's
    fields were missing: the SDK gave None for each)."""
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="not-needed", max_retries=0)
    page = claude.models.list()
    models = {model.id: model for model in page.data}
    assert {"smollm2-135m", "smollm2-135m-embed"} <= set(models) and page.has_more is False
    assert (page.first_id, page.last_id) == (page.data[0].id, page.data[-1].id)
    card = http.get("/v1/models/smollm2-135m").json()
    model = claude.models.retrieve("smollm2-135m")
    assert (model.type, model.display_name) == ("model", "smollm2-135m")
    assert model.created_at.timestamp() == card["created"] > 0


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
    assert card["gpu_layers"] == 0 and card["devices"] == []  # auto, on a machine with no GPU


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


def _worker_maps(server):
    """The memory map of granian's worker (the process that loads the models)."""
    with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as listing:
        (worker,) = [int(child) for child in listing.read().split()]
    with open(f"/proc/{worker}/maps") as maps:
        return maps.read()


def test_use_mmap_false_reads_the_weights_into_process_memory(launch, tmp_path, demo_model_path):
    """The memory-snapshot recipe: with `use_mmap = false` no mapping of the model file remains, so a
    snapshot of the process holds the weights themselves (with mmap they are file-backed pages)."""
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "in-memory"\nsource = "{demo_model_path.name}"\nwarm = true\n'
                        '[models.options]\nuse_mmap = false\n\n'
                        f'[[models]]\nname = "mapped"\nsource = "{demo_model_path.name}"\n')
    server = launch({"MODELS_MANIFEST": str(manifest)})
    ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "in-memory", **ask}, timeout=120)
    assert reply.status_code == 200, reply.text
    assert demo_model_path.name not in _worker_maps(server)
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "mapped", **ask}, timeout=120)
    assert reply.status_code == 200, reply.text
    assert demo_model_path.name in _worker_maps(server)  # the default maps the file
