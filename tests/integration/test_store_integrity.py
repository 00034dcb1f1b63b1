"""The model store and cache under faults and bursts: verified files are kept, distinct objects get
distinct files, read-only volumes serve, capacity limits hold under concurrent cold loads."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import sys

import httpx
import pytest

from handler.store.catalog import local_path
from handler.store.manifest import ModelSpec
from tests.conftest import REPO
from tests.integration.conftest import free_port, run_until_healthy

ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def _chat(server, model):
    return httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": model, **ASK}, timeout=300)


def _entry(name, source, *extra):
    return "\n".join([f'[[models]]\nname = "{name}"\nkind = "chat"\nsource = "{source}"', *extra]) + "\n"


def _env(s3, tmp_path, manifest_text, **extra):
    (tmp_path / "manifest.toml").write_text(manifest_text)
    (tmp_path / "volume").mkdir(exist_ok=True)
    return {**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(tmp_path / "manifest.toml"),
            **extra}


def test_a_configuration_failure_keeps_the_verified_file(tmp_path, demo_model_path, launch, s3_servers):
    s3 = s3_servers()
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    source = "s3://models/smol/demo.gguf"
    server = launch(_env(s3, tmp_path, _entry("huge-context", source, "[models.options]\nn_ctx = 100000000")
                         + _entry("fine", source)))
    failed = _chat(server, "huge-context")
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    assert error["code"] == "model_load_failed" and "'huge-context'" in error["message"]
    assert "Failed to load" not in error["message"]  # llama.cpp's own words for the cause, not the wrapper's
    synced = tmp_path / "volume" / local_path(tmp_path, ModelSpec(name="fine", kind="chat", source=source)).name
    assert synced.is_file()  # verified when synced: a setting that fails does not make it suspect
    assert _chat(server, "fine").status_code == 200
    assert s3.stats("models", "smol/demo.gguf")["downloads"] == 1


def test_objects_with_the_same_file_name_do_not_overwrite_each_other(tmp_path, demo_model_path, launch, s3_servers):
    s3 = s3_servers()
    s3.upload("models", "v1/model.gguf", demo_model_path)
    s3.upload("models", "v2/model.gguf", demo_model_path.read_bytes() + b"\0" * 4096)  # another object
    server = launch(_env(s3, tmp_path, _entry("one", "s3://models/v1/model.gguf")
                         + _entry("two", "s3://models/v2/model.gguf"), MAX_LOADED_MODELS="1"))
    for model in ("one", "two", "one", "two"):  # each request loads again (one model at a time)
        assert _chat(server, model).status_code == 200
    assert s3.stats("models", "v1/model.gguf")["downloads"] == 1
    assert s3.stats("models", "v2/model.gguf")["downloads"] == 1
    assert len(list((tmp_path / "volume").glob("model.*.gguf"))) == 2


def test_a_volume_synced_by_an_earlier_version_is_used_without_downloading(tmp_path, demo_model_path, launch,
                                                                          s3_servers):
    s3 = s3_servers()
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    sha = hashlib.sha256(demo_model_path.read_bytes()).hexdigest()
    env = _env(s3, tmp_path, _entry("remote", "s3://models/smol/demo.gguf", f'sha256 = "{sha}"'))
    legacy = tmp_path / "volume" / "demo.gguf"  # the bare file name earlier versions used
    shutil.copyfile(demo_model_path, legacy)
    stat = legacy.stat()
    (tmp_path / "volume" / ".demo.gguf.meta.json").write_text(json.dumps(
        {"size": stat.st_size, "sha256": sha, "mtime_ns": stat.st_mtime_ns, "etag": None, "version_id": None}))
    server = launch(env)
    assert _chat(server, "remote").status_code == 200
    assert s3.stats("models", "smol/demo.gguf")["downloads"] == 0


def test_a_read_only_volume_serves_a_pinned_model(tmp_path, demo_model_path):
    """Models baked into a read-only layer: verified by sha256 with nothing written beside them."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private mount namespace needs root and unshare")
    volume = tmp_path / "read-only"
    volume.mkdir()
    shutil.copyfile(demo_model_path, volume / "baked.gguf")
    sha = hashlib.sha256(demo_model_path.read_bytes()).hexdigest()
    (tmp_path / "manifest.toml").write_text(_entry("baked", "baked.gguf", f'sha256 = "{sha}"'))
    port = free_port()
    environment = {**os.environ, "MODEL_DIR": str(volume), "MODELS_MANIFEST": str(tmp_path / "manifest.toml"),
                   "N_THREADS": "2"}
    script = (f"mount --bind {volume} {volume} && mount -o remount,ro,bind {volume} && "
              f"exec {sys.executable} -m granian --interface asgi --host 127.0.0.1 --port {port} handler.app:app")
    server = run_until_healthy(["unshare", "-m", "sh", "-c", script], port, environment,
                               cwd=REPO, log_path=tmp_path / "server.log")
    try:
        reply = _chat(server, "baked")
        assert reply.status_code == 200, reply.text + server.log()[-2000:]
        assert _chat(server, "baked").status_code == 200  # verified once, remembered
        assert os.listdir(volume) == ["baked.gguf"]  # nothing was written (and nothing could be)
    finally:
        server.stop()


def _three_models(tmp_path, demo_model_path):
    manifest = tmp_path / "three.toml"
    manifest.write_text("".join(_entry(name, str(demo_model_path)) for name in ("m1", "m2", "m3")))
    return str(manifest)


def _most_loaded_at_once(log):
    loaded = most = 0
    for line in log.splitlines():
        if "loaded model m" in line:
            loaded += -1 if "unloaded model" in line else 1
            most = max(most, loaded)
    return most


def test_max_loaded_models_holds_under_concurrent_cold_loads(tmp_path, demo_model_path, launch):
    server = launch({"MODELS_MANIFEST": _three_models(tmp_path, demo_model_path), "MAX_LOADED_MODELS": "1"})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda index: _chat(server, f"m{index % 3 + 1}"), range(6)))
    for reply in replies:
        if reply.status_code != 200:
            assert reply.status_code == 503 and reply.headers["retry-after"], reply.text
            assert reply.json()["error"]["code"] == "model_capacity"
    assert any(reply.status_code == 200 for reply in replies)
    assert _most_loaded_at_once(server.log()) == 1
    assert sum(card["loaded"] for card in httpx.get(f"{server.base_url}/v1/models").json()["data"]) <= 1


def test_memory_budget_evicts_to_make_room_and_refuses_what_cannot_fit(tmp_path, demo_model_path, launch):
    # One demo model with 4 slots of 2048 tokens takes ~375 MiB: a 600 MiB budget holds one at a time.
    server = launch({"MODELS_MANIFEST": _three_models(tmp_path, demo_model_path), "MAX_MODEL_MEMORY_MB": "600"})
    card = httpx.get(f"{server.base_url}/v1/models/m1").json()
    assert 300 * 2**20 < card["memory_estimate_bytes"] < 600 * 2**20 and card["memory_bytes"] is None
    for model in ("m1", "m2", "m3", "m1"):
        assert _chat(server, model).status_code == 200
    assert _most_loaded_at_once(server.log()) == 1
    loaded = httpx.get(f"{server.base_url}/v1/models/m1").json()
    assert loaded["loaded"] is True and 300 * 2**20 < loaded["memory_bytes"] <= loaded["memory_estimate_bytes"]
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'gguf_model_memory_bytes{memory="host",model="m1",source="measured"}' in metrics
    assert ('gguf_model_memory_budget_bytes{memory="host"} 6.291456e+08' in metrics
            and 'gguf_model_memory_budget_bytes{memory="gpu"} 0.0' in metrics)


def test_a_model_larger_than_the_budget_is_a_clear_error(tmp_path, demo_model_path, launch):
    server = launch({"MODELS_MANIFEST": _three_models(tmp_path, demo_model_path), "MAX_MODEL_MEMORY_MB": "100"})
    refused = _chat(server, "m1")
    assert refused.status_code == 500
    error = refused.json()["error"]
    assert error["code"] == "model_too_large" and "'m1'" in error["message"] and "100 MiB" in error["message"]
    assert "MiB" in error["message"].split("needs about")[1]
