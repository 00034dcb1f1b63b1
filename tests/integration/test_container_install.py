"""The container's install path, rehearsed without a container engine.

The Containerfile builds its runtime environment with `uv sync --frozen --no-default-groups
--no-editable` and starts `python -m handler serve` with only the documented variables. Doing the
same here, outside the project directory, catches a runtime import of a test- or lint-only package
and anything that only works from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.integration.conftest import free_port, run_until_healthy

PROJECT_FILES = ("pyproject.toml", "uv.lock", "README.md")


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in UV
    if uv is None:
        pytest.fail("uv is not on PATH: install it with `pip install uv` (the README's commands do)")
    return uv


def _runtime_environment(tmp_path: Path) -> Path:
    """A copy of what the image's build stage copies, synced as it syncs; returns the venv."""
    source, venv = tmp_path / "src", tmp_path / "venv"
    source.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "handler", source / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    environment.pop("VIRTUAL_ENV", None)
    subprocess.run([_uv(), "sync", "--frozen", "--no-default-groups", "--no-editable", "--python", sys.executable],
                   cwd=source, env=environment, check=True, timeout=1200, capture_output=True)
    shutil.rmtree(source)  # the venv must not need the source tree
    return venv


def test_the_image_install_path_serves_a_chat(tmp_path, demo_model_path):
    venv = _runtime_environment(tmp_path)
    listing = "import importlib.metadata as m; print(' '.join(d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()))"
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", listing], capture_output=True, text=True,
                               check=True).stdout.split()
    assert "llama-cpp-python" in installed and "granian" in installed
    assert not {"pytest", "moto", "checkov", "schemathesis", "openai"} & set(installed)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "demo"\nkind = "chat"\nsource = "{demo_model_path}"\n')
    port = free_port()
    # env -i: nothing from this process leaks in, only what the container sets.
    documented = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOST": "127.0.0.1", "PORT": str(port),
                  "MODEL_DIR": str(tmp_path / "volume"), "MODELS_MANIFEST": str(manifest), "N_THREADS": "2"}
    command = ["env", "-i", *(f"{key}={value}" for key, value in documented.items()),
               str(venv / "bin" / "python"), "-m", "handler", "serve"]
    server = run_until_healthy(command, port, {}, cwd=tmp_path, log_path=tmp_path / "server.log")
    try:
        reply = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, json={
            "model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
        # The playground's files ship inside the installed package, not only in a source checkout.
        for path in ("/", "/playground/main.js", "/playground/chat.js", "/playground/playground.css"):
            assert httpx.get(server.base_url + path, timeout=30).status_code == 200, path
    finally:
        assert server.stop() == 0, server.log()[-4000:]
