"""Snapshot-ready start: a warmed process closes its S3 connections before a checkpoint (Modal, CRIU, GKE
pod snapshots) and restarts its idle clocks after a restore; its weights live in the process, not in a
mapped file. Checkpointing a real process needs CRIU, tried last (this test says why it cannot run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.demo import end_of_turn_bias
from tests.support.waiting import wait_for

CHAT = "smollm2-135m"
ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def _processes(root: int) -> list[int]:
    """`root` and its descendants."""
    found, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            new = [int(child) for child in children.read_text().split()]
            found += new
            frontier += new
    return found


def _maps_model_file(server, name: str) -> bool:
    return any(name in Path(f"/proc/{pid}/maps").read_text() for pid in _processes(server.process.pid)
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


def _criu_problem() -> str | None:
    if shutil.which("criu") is None:
        return "criu is not installed (Debian package criu)"
    check = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        errors = [line for line in (check.stderr + check.stdout).splitlines() if "Error" in line] or ["?"]
        return f"criu check fails on this kernel: {errors[0]} … {errors[-1]}"
    return None


def test_a_checkpointed_server_answers_after_restore(launch, tmp_path):
    if (problem := _criu_problem()) is not None:
        pytest.skip(problem)
    server = launch({"SNAPSHOT_READY": "true", "WARM_MODELS": CHAT})
    assert wait_for(lambda: httpx.get(f"{server.base_url}/health/ready").status_code == 200)
    assert httpx.post(f"{server.base_url}/admin/snapshot/prepare", timeout=60).status_code == 200
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["criu", "dump", "-t", str(server.process.pid), "-D", str(images), "--shell-job",
                    "--tcp-listen", "--file-locks"], check=True, timeout=120)
    server.process.wait(30)
    subprocess.run(["criu", "restore", "-d", "-D", str(images), "--shell-job", "--tcp-listen", "--file-locks"],
                   check=True, timeout=120)
    try:
        assert httpx.post(f"{server.base_url}/admin/snapshot/resume", timeout=60).status_code == 200
        answer = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": CHAT, **ASK}, timeout=60)
        assert answer.status_code == 200
    finally:
        subprocess.run(["pkill", "-f", f"--port {server.base_url.rsplit(':', 1)[1]}"], check=False)
