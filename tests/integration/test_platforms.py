"""The platforms' contracts against the real server: SageMaker (/ping, /invocations), RunPod's health
port (PORT_HEALTH) and Vertex AI (AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE with instances and predictions)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.support.waiting import wait_for

CHAT = "smollm2-135m"
HI = [{"role": "user", "content": "Hi"}]


def test_sagemaker_ping_and_invocations(http):
    assert http.get("/ping").status_code == 200
    chat = http.post("/invocations", json={"messages": HI, "max_tokens": 2})  # no model: the one chat model
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion" and chat.json()["model"] == CHAT
    completion = http.post("/invocations", json={"prompt": "Once", "max_tokens": 2})
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    embedding = http.post("/invocations", json={"input": ["a", "b"]})
    assert embedding.status_code == 200 and len(embedding.json()["data"]) == 2
    streamed = http.post("/invocations", json={"messages": HI, "max_tokens": 2, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream") and streamed.text.endswith("[DONE]\n\n")
    for body, param in [({"nothing": 1}, "body"), ([1, 2], "body"), ({"messages": "hi"}, "body"),
                        ({"messages": HI, "model": "absent"}, "model")]:
        refused = http.post("/invocations", json=body)
        assert refused.status_code in (400, 404) and refused.json()["error"]["param"] == param, refused.text
    metrics = http.get("/metrics").text
    assert 'gguf_model_requests_total{endpoint="invocations"' in metrics


def test_runpod_health_port_says_loading_ready_or_failed(launch, tmp_path, demo_model_path, s3_servers):
    s3 = s3_servers(bytes_per_second=20 * 1024 * 1024)
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[models]]\nname = "remote"\nsource = "s3://models/smol/demo.gguf"\nwarm = true\n')
    (tmp_path / "volume").mkdir()
    port = free_port()
    server = launch({**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest),
                     "PORT_HEALTH": str(port)})
    seen = []

    def ready():
        seen.append(httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code)
        return seen[-1] == 200

    assert wait_for(ready, interval=0.05) and set(seen) <= {204, 200}
    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    assert httpx.get(f"{server.base_url}/ping").status_code == 200


def test_runpod_health_port_says_failed(launch, tmp_path, s3_servers):
    s3 = s3_servers()
    s3.upload("models", "other.gguf", b"GGUF")  # the bucket exists; the warm model's object does not
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[models]]\nname = "missing"\nsource = "s3://models/absent.gguf"\nwarm = true\n')
    (tmp_path / "volume").mkdir()
    port = free_port()
    launch({**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest),
            "PORT_HEALTH": str(port), "S3_MAX_ATTEMPTS": "1"})
    assert wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 503)


@pytest.fixture
def vertex(launch):
    return launch({"AIP_HEALTH_ROUTE": "/vertex/health", "AIP_PREDICT_ROUTE": "/vertex/predict",
                   "WARM_MODELS": CHAT})


def test_vertex_health_and_predictions(vertex):
    assert wait_for(lambda: httpx.get(f"{vertex.base_url}/vertex/health").status_code == 200)
    answer = httpx.post(f"{vertex.base_url}/vertex/predict", timeout=120, json={
        "instances": [{"messages": HI}, {"messages": [{"role": "user", "content": "Bye"}]}],
        "parameters": {"max_tokens": 2, "temperature": 0}})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [prediction["object"] for prediction in predictions] == ["chat.completion"] * 2
    assert all(prediction["usage"]["completion_tokens"] <= 2 for prediction in predictions)
    for body in [{"instances": []}, {"instances": "x"}, {"instances": [{"messages": HI}], "parameters": [1]},
                 {"instances": [{"messages": HI, "stream": True}]}, json.loads('{"instances": [{}]}')]:
        refused = httpx.post(f"{vertex.base_url}/vertex/predict", json=body, timeout=60)
        assert refused.status_code == 400, (body, refused.text)
