"""The CPU image, built from the Containerfile and run as its users run it: as uid 10001, a volume on
/models holding the demo model, the default manifest, the port published on loopback only.

Built by `just image-test` (or here, when podman is installed) on a Debian base made from Debian's
packages, since no image registry may be reachable. Skipped, with the reason, where podman is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import DEMO_FILE, REPO, demo_model_dir
from tests.integration.conftest import free_port
from tests.support.demo import end_of_turn_bias

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3900)]  # the first build compiles llama.cpp
TAG = "localhost/serverless-gguf:cpu-test"
# This VM's podman needs runc and explicit limits (crun fails on its cgroups); the same as the justfile's.
PODMAN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
APP_UID = 10001
READY_TIMEOUT_S = 180
MAX_IMAGE_BYTES = 1 << 30
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "cmake", "make", "nvcc", "ld")
MODEL = "smollm2-135m"


def _podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed here: the image is built and tested where it is (`just image-test`)")
    if tag := os.environ.get("IMAGE_UNDER_TEST"):
        return tag
    just = shutil.which("just")
    if just is None or shutil.which("mmdebstrap") is None:
        pytest.skip("building the image here needs just and mmdebstrap (apt-get install mmdebstrap)")
    subprocess.run([just, "image-local", TAG], cwd=REPO, check=True, timeout=3600)  # as `just image-test` does
    return TAG


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """A model volume as an operator prepares one: the demo model, owned by the image's user."""
    path = tmp_path_factory.mktemp("models")
    shutil.copy2(demo_model_dir() / DEMO_FILE, path / DEMO_FILE)
    for item in (path, path / DEMO_FILE):
        os.chown(item, APP_UID, APP_UID)
    return path


class Container:
    def __init__(self, name: str, base_url: str) -> None:
        self.name, self.base_url = name, base_url

    def logs(self) -> str:
        result = _podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(_podman("inspect", "--format", "{{json .State}}", self.name).stdout)


def _wait_ready(container: Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not container.state()["Running"]:
            pytest.fail(f"the container stopped before it was ready:\n{container.logs()[-4000:]}")
        try:
            if httpx.get(f"{container.base_url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready within {READY_TIMEOUT_S} s:\n{container.logs()[-4000:]}")


@pytest.fixture(scope="module")
def container(image, volume):
    name, port = f"serverless-gguf-test-{uuid.uuid4().hex[:8]}", free_port()
    # Only what a user sets: the port is published on loopback alone.
    _podman("run", "--detach", "--name", name, *PODMAN_FLAGS, "--publish", f"127.0.0.1:{port}:8000",
            "--volume", f"{volume}:/models", "--env", "WARM_MODELS=" + MODEL, image)
    running = Container(name, f"http://127.0.0.1:{port}")
    try:
        _wait_ready(running)
        yield running
    finally:
        _podman("rm", "--force", "--time", "5", name, check=False)


def _client(container: Container) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{container.base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_the_image_runs_as_its_own_user_not_root(image, container):
    assert _podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == f"{APP_UID}:{APP_UID}"
    assert _podman("exec", container.name, "id", "-u").stdout.strip() == str(APP_UID)


def test_the_image_answers_a_chat(container):
    reply = _client(container).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


def test_the_image_streams_a_chat(container):
    stream = _client(container).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True,
        logit_bias=end_of_turn_bias())
    chunks = list(stream)
    assert sum(bool(chunk.choices and chunk.choices[0].delta.content) for chunk in chunks) > 1
    assert chunks[-1].choices[0].finish_reason == "length"


def test_the_image_holds_no_compilers_and_no_weights(image):
    probe = "; ".join(f"command -v {tool}" for tool in COMPILERS) + "; find / -xdev -name '*.gguf'; true"
    found = _podman("run", "--rm", *PODMAN_FLAGS, "--entrypoint", "/bin/sh", image, "-c", probe).stdout.split()
    assert found == []
    size = int(_podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size < MAX_IMAGE_BYTES, size


def test_sigterm_lets_a_running_stream_finish_then_the_container_exits_cleanly(container):
    """Last in this module: it stops the shared container."""
    stream = _client(container).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell a long story."}], max_tokens=200, stream=True,
        logit_bias=end_of_turn_bias())
    chunks = iter(stream)
    first = next(chunks)
    _podman("kill", "--signal", "TERM", container.name)
    rest = list(chunks)
    assert first.choices is not None and rest[-1].choices[0].finish_reason == "length"
    assert _podman("wait", container.name, timeout=120).stdout.strip() == "0", container.logs()[-4000:]
    assert "draining: 1 request(s) in flight" in container.logs()  # the signal came while it streamed
