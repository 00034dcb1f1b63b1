"""The real server: granian on a free loopback port, serving the real demo model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import REPO

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, process: subprocess.Popen, base_url: str, log_path: Path) -> None:
        self.process, self.base_url, self.log_path = process, base_url, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(tmp_path: Path, env: dict[str, str] | None = None, *, workers: int = 1) -> RunningServer:
    port = free_port()
    # KV_CACHE_MB=0: test servers share ./models, and saved prompt prefixes must not carry from one test
    # to another (tests that want them set a directory of their own).
    environment = {**os.environ, "MODEL_DIR": str(REPO / "models"), "N_THREADS": "2", "KV_CACHE_MB": "0",
                   "MODELS_MANIFEST": str(REPO / "models_manifest" / "default.toml"), **(env or {})}
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--respawn-failed-workers", "--factory", "handler.serve:build"]
    return run_until_healthy(command, port, environment, cwd=REPO, log_path=tmp_path / f"server-{port}.log")


def run_until_healthy(command: list[str], port: int, environment: dict[str, str], *, cwd: Path,
                      log_path: Path) -> RunningServer:
    """Start `command` (a server on loopback `port`) and return once /health answers."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.stop()
    pytest.fail(f"server did not answer /health within {START_TIMEOUT_S}s:\n{server.log()[-4000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


@pytest.fixture
def launch(tmp_path: Path, demo_model_path: Path) -> Iterator:
    """Start servers with extra environment (`launch(env, workers=N)`); all stop at teardown."""
    started: list[RunningServer] = []

    def start(env: dict[str, str] | None = None, *, workers: int = 1) -> RunningServer:
        started.append(start_server(tmp_path, env, workers=workers))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def s3_servers() -> Iterator:
    """Start test S3 servers (`s3_servers(bytes_per_second=N, port=P)`); all die at teardown."""
    from tests.support.s3 import S3Server

    started: list[S3Server] = []

    def start(*, bytes_per_second: int = 0, port: int | None = None) -> S3Server:
        started.append(S3Server(port or free_port(), bytes_per_second).start())
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def openai_client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="not-needed", timeout=120, max_retries=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid:
            item.add_marker(pytest.mark.slow)
