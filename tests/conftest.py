"""Shared fixtures: the demo model on disk, and where test downloads are cached (outside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# `just test` checks a fixed sample of every property and of the API fuzz (derandomized: the same
# examples each run, so a red run is a defect that reproduces, never the luck of one draw);
# `just fuzz` draws new examples each run (`--hypothesis-profile=explore`).
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("fixed")

REPO = Path(__file__).resolve().parent.parent
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "serverless-gguf"
GEMMA_PATH = CACHE_DIR / "gemma-3-270m-q4_k_m.gguf"  # `just fetch-gemma` puts it there


def demo_model_dir() -> Path:
    return (REPO / os.environ.get("MODEL_DIR", "models")).resolve()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    path = demo_model_dir() / DEMO_FILE
    if not path.is_file():
        pytest.fail(f"the demo model is missing at {path}: run `just fetch-demo` (or `just test`, which does)")
    return path


@pytest.fixture(scope="session")
def gemma_model_path() -> Path:
    """Gemma 3 270M (base, no chat template, sliding-window attention): the second architecture."""
    if not GEMMA_PATH.is_file():
        pytest.fail(f"Gemma 3 270M is missing at {GEMMA_PATH}: run `just fetch-gemma` (or `just test`, which does)")
    return GEMMA_PATH


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR
