"""Shared fixtures: the demo model on disk, and where test downloads are cached (outside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "serverless-gguf"


def demo_model_dir() -> Path:
    return (REPO / os.environ.get("MODEL_DIR", "models")).resolve()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    path = demo_model_dir() / DEMO_FILE
    if not path.is_file():
        pytest.fail(f"the demo model is missing at {path}: run `just fetch-demo` (or `just test`, which does)")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR
