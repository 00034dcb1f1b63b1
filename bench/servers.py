"""Servers under test, each started on a loopback port and stopped after: ours (granian),
llama-cpp-python's own server, and llama.cpp's llama-server when one is available."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import free_port

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "serverless-gguf"


class Server:
    def __init__(self, name: str, process: subprocess.Popen, base_url: str, model: str) -> None:
        self.name, self.process, self.base_url, self.model = name, process, base_url, model

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the process serving requests (granian's worker when there is one)."""
        pids = [self.process.pid] + _children(self.process.pid)
        return max(_vm_hwm_kb(pid) for pid in pids) / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120, *, interval: float = 0.05,
               client: httpx.Client | None = None) -> None:
    """Return once `url` answers 200 (through `client`, for a unix socket), polling every `interval`
    seconds; fail if the process exits first or `timeout` passes."""
    get = client.get if client is not None else httpx.get
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


@contextmanager
def _running(name: str, command: list[str], ready_path: str, model: str, port: int,
             env: dict[str, str] | None = None) -> Iterator[Server]:
    """`command` serving on `port` until the block ends. Its output goes to a file, whose last lines a
    server that never came up is reported with (a lent GPU machine's one run has no other trace)."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})},
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(base_url + ready_path, process)
            except RuntimeError as exc:
                raise RuntimeError(f"{name}: {exc}; its last output:\n{_tail(output)}") from None
            yield Server(name, process, base_url, model)
        finally:
            _stop(process)


def _tail(output, lines: int = 20) -> str:
    output.seek(0)
    return "\n".join(output.read().decode(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def ours(model_dir: Path, threads: int, parallel: int, *, port: int | None = None,
         env: dict[str, str] | None = None, model: str = "smollm2-135m") -> Iterator[Server]:
    port = port or free_port()
    env = {"MODEL_DIR": str(model_dir), "N_THREADS": str(threads), "N_PARALLEL": str(parallel), "N_CTX": "2048",
           "MAX_QUEUE": "64", "WARM_MODELS": model, "KV_CACHE_MB": "0", **(env or {})}
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--factory", "handler.serve:build"]
    return _running("serverless-gguf", command, "/health/ready", model, port, env)


def ours_on_unix_socket(socket_path: Path, env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen:
    """Ours in a session of its own, on a unix socket, with no pipe to this process: what CRIU needs to
    checkpoint it whole (see `bench.criu`). Its log goes to `log_path` (a restore checks that the file is
    as long as it was at the checkpoint: none when one checkpoint is restored many times). The caller
    waits for it and stops it."""
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--uds", str(socket_path),
               "--factory", "handler.serve:build"]
    with log_path.open("wb") if log_path is not None else open(os.devnull, "wb") as log:
        return subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def unix_client(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://server", timeout=120)


def llama_cpp_python_server(model_path: Path, threads: int) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--n_threads", str(threads),
               "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2-135m"]
    return _running("llama_cpp.server", command, "/v1/models", "smollm2-135m", port)


def llama_server_binary() -> str | None:
    candidates = [os.environ.get("LLAMA_SERVER"), shutil.which("llama-server"),
                  str(CACHE / "llama-server" / "build" / "bin" / "llama-server")]
    return next((path for path in candidates if path and Path(path).is_file()), None)


def llama_server(binary: str, model_path: Path, threads: int, parallel: int, *, model: str = "smollm2-135m",
                 extra: tuple[str, ...] = ()) -> Iterator[Server]:
    port = free_port()
    command = [binary, "-m", str(model_path), "-t", str(threads), "-tb", str(threads), "-np", str(parallel),
               "-c", str(2048 * parallel), "--host", "127.0.0.1", "--port", str(port), "--alias", model, *extra]
    return _running("llama-server", command, "/health", model, port)


def llama_tool(name: str) -> str | None:
    """Another binary of the llama-server build (llama-batched-bench), when there is one."""
    server = llama_server_binary()
    candidate = Path(server).with_name(name) if server else None
    return str(candidate) if candidate is not None and candidate.is_file() else shutil.which(name)
