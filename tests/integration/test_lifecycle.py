"""Cold-start-aware lifecycle against the real server: warm set and readiness, eviction, backpressure,
disconnects, drain on SIGTERM, API keys and metrics."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.demo import end_of_turn_bias
from tests.support.waiting import wait_for

CHAT, EMBED = "smollm2-135m", "smollm2-135m-embed"
LONG = {"model": CHAT, "messages": [{"role": "user", "content": "Tell me a very long story about the sea."}],
        "temperature": 0, "logit_bias": end_of_turn_bias()}  # replies run to max_tokens


def _chat(base_url, max_tokens=4, timeout=300, **extra):
    return httpx.post(f"{base_url}/v1/chat/completions", timeout=timeout,
                      json={**LONG, "max_tokens": max_tokens, **extra})


def test_warm_set_readiness_and_requests_during_warm_up(tmp_path, demo_model_path, launch, s3_servers):
    s3 = s3_servers(bytes_per_second=25 * 1024 * 1024)
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    sha = hashlib.sha256(demo_model_path.read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "remote"\nsource = "s3://models/smol/demo.gguf"\n'
                        f'sha256 = "{sha}"\nwarm = true\n')
    (tmp_path / "volume").mkdir()
    server = launch({**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest)})
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    early = httpx.get(f"{server.base_url}/health/ready")
    assert early.status_code == 503
    assert early.json()["models"]["remote"]["state"] in ("pending", "downloading", "loading")
    during = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120,
                        json={"model": "remote", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert during.status_code == 200
    assert wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200)
    ready = httpx.get(f"{server.base_url}/health/ready").json()
    assert ready["ready"] is True and ready["models"]["remote"] == {"state": "ready"}
    assert s3.stats("models", "smol/demo.gguf")["downloads"] == 1
    assert server.log().count("loaded model remote") == 1


def test_the_warm_sets_first_model_is_read_while_the_app_starts(launch, tmp_path, demo_model_path):
    """On the volume already, the warm model's weights and context are made while the framework imports
    (`handler.serve`), and adopted once the store has checked the file: one load, no second read."""
    server = launch({"WARM_MODELS": CHAT})
    assert wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200)
    assert _chat(server.base_url, max_tokens=2).status_code == 200
    assert server.log().count(f"model {CHAT}: adopted the weights read while the process started") == 1
    assert server.log().count(f"loaded model {CHAT}") == 1


@pytest.mark.parametrize("staging", ["volume", "memory"])
def test_a_warm_model_only_in_s3_is_synced_from_the_start_and_read_once_verified(launch, tmp_path, demo_model_path,
                                                                                s3_servers, staging):
    """A remote warm model that is not on the volume starts syncing while the framework imports, by the
    store the app then takes over, and llama.cpp reads it as soon as that sync has verified it: one
    download, one load, adopted."""
    s3 = s3_servers()
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[models]]\nname = "remote"\nsource = "s3://models/smol/demo.gguf"\nwarm = true\n')
    (tmp_path / "volume").mkdir()
    server = launch({**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest),
                     "MODEL_STAGING": staging})
    assert wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200)
    assert _chat(server.base_url, max_tokens=2, model="remote").status_code == 200
    assert server.log().count("model remote: adopted the weights read while the process started") == 1
    assert server.log().count("loaded model remote") == 1
    assert s3.stats("models", "smol/demo.gguf")["downloads"] == 1


def _loaded(base_url):
    return {card["id"]: card["loaded"] for card in httpx.get(f"{base_url}/v1/models").json()["data"]}


def test_idle_ttl_unloads(launch):
    server = launch({"MODEL_TTL_S": "1"})
    assert _chat(server.base_url).status_code == 200
    assert _loaded(server.base_url)[CHAT] is True
    assert wait_for(lambda: _loaded(server.base_url)[CHAT] is False, timeout=120)
    assert _chat(server.base_url).status_code == 200  # loads again on demand


def test_lru_eviction_spares_models_in_use(launch):
    server = launch({"MAX_LOADED_MODELS": "1"})
    assert _chat(server.base_url).status_code == 200
    embedded = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": EMBED, "input": "x"}, timeout=60)
    assert embedded.status_code == 200
    assert _loaded(server.base_url) == {CHAT: False, EMBED: True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=120,
                      json={**LONG, "max_tokens": 400, "stream": True}) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)  # the chat model is loaded and in use now
        busy = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": EMBED, "input": "x"}, timeout=60)
        assert busy.status_code == 503 and busy.headers["retry-after"]
        assert busy.json()["error"]["code"] == "model_capacity"
        assert _loaded(server.base_url)[CHAT] is True


def test_flood_beyond_the_queue_gets_429(launch):
    # One running, two waiting, the rest refused. The wait is never cut short (a busy machine may take
    # minutes for these replies): only the queue's size decides, not a timeout.
    server = launch({"MAX_QUEUE": "2", "N_PARALLEL": "1", "QUEUE_TIMEOUT_S": "1800"})
    assert _chat(server.base_url).status_code == 200  # loaded before the flood
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _chat(server.base_url, max_tokens=40, timeout=1800), range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    for response in responses:
        if response.status_code == 429:
            assert response.headers["retry-after"] and response.json()["error"]["type"] == "rate_limit_error"
        else:
            assert response.json()["usage"]["completion_tokens"] > 0
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert _chat(server.base_url).status_code == 200


def _generations(base_url, reason):
    samples = _samples(httpx.get(f"{base_url}/metrics").text)
    return samples.get(("gguf_generations_total", (("finish_reason", reason), ("model", CHAT))), 0)


def _slot_freed_by_cancellation(base_url, completed_before):
    """Wait (bounded, generously: the machine may be busy) until the abandoned generation's slot is
    free, then check it was cancelled rather than run to its end."""
    assert wait_for(lambda: _samples(httpx.get(f"{base_url}/metrics").text).get(
        ("gguf_slots_busy", (("model", CHAT),))) == 0, timeout=120)
    assert _generations(base_url, "cancelled") == 1
    assert _generations(base_url, "length") == completed_before


def test_disconnect_mid_stream_frees_the_model(launch):
    server = launch({"N_PARALLEL": "1"})  # one slot: the next request needs the abandoned one's
    assert _chat(server.base_url).status_code == 200  # loaded
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=120,
                      json={**LONG, "max_tokens": 1500, "stream": True}) as stream:
        lines = stream.iter_lines()
        for _ in range(5):
            next(lines)
    _slot_freed_by_cancellation(server.base_url, completed_before=1)
    assert _chat(server.base_url, max_tokens=3).status_code == 200


def test_disconnect_during_a_plain_request_frees_the_model(launch):
    server = launch({"N_PARALLEL": "1"})
    assert _chat(server.base_url).status_code == 200  # loaded
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(f"{server.base_url}/v1/chat/completions", json={**LONG, "max_tokens": 1500}, timeout=1.5)
    _slot_freed_by_cancellation(server.base_url, completed_before=1)
    assert _chat(server.base_url, max_tokens=3).status_code == 200


def sigterm_during_a_stream(server, max_tokens):
    """Start a stream, send SIGTERM once it is under way, and return the data of every event after."""
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=600,
                      json={**LONG, "max_tokens": max_tokens, "stream": True}) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        server.process.send_signal(signal.SIGTERM)
        return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_sigterm_drains_the_stream_then_exits_zero(launch):
    # A drain timeout far beyond what 120 tokens take even on a busy machine: the stream must end whole.
    server = launch({"DRAIN_TIMEOUT_S": "300"})
    events = sigterm_during_a_stream(server, max_tokens=120)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    with pytest.raises(httpx.TransportError):  # the listener is closed: new connections are refused
        _chat(server.base_url)
    assert server.process.wait(300) == 0


def test_api_key(launch):
    server = launch({"API_KEY": "first-key,second-key"})
    missing = httpx.get(f"{server.base_url}/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for key in ("first-key", "second-key"):
        assert httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert httpx.get(f"{server.base_url}/health/ready").status_code == 200
    for path, body in [("/v1/completions", {"prompt": "a", "max_tokens": 1}),
                       ("/v1/responses", {"input": "a", "max_output_tokens": 1}),
                       ("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [1]})]:
        body = {"model": CHAT, **body}  # one token at most: the reply's length is not what is tested
        assert httpx.post(f"{server.base_url}{path}", json=body, timeout=120).status_code == 401, path
        keyed = httpx.post(f"{server.base_url}{path}", json=body, headers={"Authorization": "Bearer first-key"},
                           timeout=120)
        assert keyed.status_code == 200, (path, keyed.text)
    assert "first-key" not in server.log()


def _samples(text):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_parse_and_move(server, http):
    before = _samples(http.get("/metrics").text)
    assert http.post("/v1/chat/completions", json={**LONG, "max_tokens": 3}).status_code == 200
    after = _samples(http.get("/metrics").text)
    key = ("gguf_tokens_total", (("kind", "completion"), ("model", CHAT)))
    assert after[key] == before.get(key, 0) + 3
    assert after[("gguf_models_loaded", ())] >= 1
    assert any(name == "gguf_time_to_first_token_seconds_count" for name, _ in after)
    assert any(name.startswith("gguf_http_requests_total") for name, _ in after)
    for step in ("gguf_step_seconds_count", "gguf_step_host_seconds_count", "gguf_inter_token_gap_seconds_count"):
        key = (step, (("model", CHAT),))
        assert after[key] >= before.get(key, 0) + 2, step  # the model's steps, recorded on its thread


def test_max_request_s_ends_a_generation_as_length(launch):
    """AWS Lambda bills an invocation until it ends: MAX_REQUEST_S caps a generation's wall-clock time,
    and the reply ends as a max_tokens cut would (finish_reason "length", usage included)."""
    server = launch({"MAX_REQUEST_S": "1"})
    body = {**LONG, "max_tokens": 1800}  # far more than a second of decoding
    whole = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300).json()
    assert whole["choices"][0]["finish_reason"] == "length"
    assert 0 < whole["usage"]["completion_tokens"] < 1800
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"
    assert 0 < json.loads(events[-2])["usage"]["completion_tokens"] < 1800


def _gauges(base_url):
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        if family.name in ("gguf_requests_waiting", "gguf_requests_running", "gguf_kv_cache_utilization"):
            for sample in family.samples:
                if sample.labels.get("model") == CHAT:
                    values[family.name] = sample.value
    return values


def test_autoscaling_gauges_rise_and_fall_with_the_queue(launch):
    """Queued requests, running requests and KV cache utilization (what KEDA and inference gateways
    read) follow the load: one long request in the only slot and two waiting, then none."""
    server = launch({"N_PARALLEL": "1", "MAX_QUEUE": "4", "WARM_MODELS": CHAT})
    assert wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200)
    idle = {"gguf_requests_waiting": 0, "gguf_requests_running": 0, "gguf_kv_cache_utilization": 0}
    assert wait_for(lambda: _gauges(server.base_url) == idle)

    def loaded(gauges):
        return (gauges.get("gguf_requests_waiting") == 2 and gauges.get("gguf_requests_running") == 1
                and 0 < gauges.get("gguf_kv_cache_utilization", 0) < 1)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                          json={**LONG, "max_tokens": 1500, "stream": True}) as stream:
            lines = stream.iter_lines()
            next(lines)  # the long request holds the slot until this stream closes
            replies = [pool.submit(_chat, server.base_url, 4) for _ in range(2)]
            assert wait_for(lambda: loaded(_gauges(server.base_url))), _gauges(server.base_url)
        assert all(reply.result().status_code == 200 for reply in replies)  # the slot freed: they ran
    assert wait_for(lambda: _gauges(server.base_url) == idle), _gauges(server.base_url)
