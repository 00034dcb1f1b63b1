"""Snapshot-ready start: a warmed process closes its S3 connections before a checkpoint (Modal, CRIU, GKE
pod snapshots) and restarts its idle clocks after a restore; its weights live in the process, not in a
mapped file. A real checkpoint and restore needs CRIU (`just fetch-criu`; the test says why it skips)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench import criu, servers
from tests.conftest import REPO
from tests.support.demo import end_of_turn_bias
from tests.support.waiting import wait_for

CHAT = "smollm2-135m"
ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def _maps_model_file(server, name: str) -> bool:
    return any(name in Path(f"/proc/{pid}/maps").read_text() for pid in criu.process_tree(server.process.pid)
               if Path(f"/proc/{pid}/maps").exists())


@pytest.fixture
def remote_env(tmp_path, demo_model_path, s3_servers):
    s3 = s3_servers()
    s3.upload("models", "smol/demo.gguf", demo_model_path)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "{CHAT}"\nsource = "{demo_model_path}"\nwarm = true\n\n'
                        '[[models]]\nname = "remote"\nsource = "s3://models/smol/demo.gguf"\nwarm = true\n')
    (tmp_path / "volume").mkdir()
    return s3, {**s3.app_env(), "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest),
                "SNAPSHOT_READY": "true"}


def test_prepare_closes_s3_connections_and_resume_keeps_serving(launch, remote_env, demo_model_path):
    s3, env = remote_env
    server = launch(env)
    assert wait_for(lambda: httpx.get(f"{server.base_url}/health/ready").status_code == 200)
    assert not _maps_model_file(server, demo_model_path.name)  # SNAPSHOT_READY: weights read, not mapped
    prepared = httpx.post(f"{server.base_url}/admin/snapshot/prepare", timeout=60)
    assert prepared.status_code == 200, prepared.text
    assert prepared.json()["closed_connections"] is True and set(prepared.json()["models"]) == {CHAT, "remote"}
    resumed = httpx.post(f"{server.base_url}/admin/snapshot/resume", timeout=60)
    assert resumed.status_code == 200 and resumed.json()["resumed"] is True
    assert httpx.post(f"{server.base_url}/models/remote/unload", timeout=60).json()["unloaded"] is True
    assert httpx.delete(f"{server.base_url}/models/remote/file", timeout=60).status_code == 200
    again = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "remote", **ASK}, timeout=120)
    assert again.status_code == 200  # S3 reconnected on its next use
    assert s3.stats("models", "smol/demo.gguf")["downloads"] == 2


def test_prepare_refuses_a_busy_or_cold_process(launch, remote_env):
    _, env = remote_env
    server = launch({**env, "S3_MAX_ATTEMPTS": "1"})
    if httpx.get(f"{server.base_url}/health/ready").status_code != 200:  # caught while warming up
        cold = httpx.post(f"{server.base_url}/admin/snapshot/prepare", timeout=60)
        assert cold.status_code in (200, 503)
    assert wait_for(lambda: httpx.get(f"{server.base_url}/health/ready").status_code == 200)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 400,
            "stream": True, "logit_bias": end_of_turn_bias()}  # runs to max_tokens
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as stream:
        lines = stream.iter_lines()  # kept: a dropped line iterator closes the response (the client leaves)
        next(lines)  # the request is in flight
        busy = httpx.post(f"{server.base_url}/admin/snapshot/prepare", timeout=60)
    assert busy.status_code == 409 and "in flight" in busy.json()["error"]["message"], busy.text


def test_a_checkpointed_server_answers_after_restore(tmp_path):
    if (problem := criu.problem()) is not None:
        pytest.skip(problem)
    socket_path = tmp_path / "server.sock"
    env = {"MODEL_DIR": str(REPO / "models"), "N_THREADS": "2", "KV_CACHE_MB": "0", "SNAPSHOT_READY": "true",
           "MODELS_MANIFEST": str(REPO / "models_manifest" / "default.toml"), "WARM_MODELS": CHAT}
    process = servers.ours_on_unix_socket(socket_path, env, tmp_path / "server.log")
    tree: list[int] = []
    try:
        with servers.unix_client(socket_path) as client:  # closed before the checkpoint: no half connection to dump
            servers.wait_ready("http://server/health/ready", process, client=client)
            assert client.post("/admin/snapshot/prepare").status_code == 200
        tree = criu.process_tree(process.pid)
        images = tmp_path / "images"
        images.mkdir()
        criu.checkpoint(process, images)
        assert not any(map(criu.running, tree)), "the checkpoint ends the server"
        criu.restore(images)
        assert all(map(criu.running, tree))  # the same processes, restored
        with servers.unix_client(socket_path) as client:
            assert client.post("/admin/snapshot/resume").status_code == 200
            answer = client.post("/v1/chat/completions", json={"model": CHAT, **ASK})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
    finally:
        criu.stop(tree or [process.pid], process)
