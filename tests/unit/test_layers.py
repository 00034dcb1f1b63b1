"""The tree's architecture, read from the imports: `api` (HTTP only) → `engine` (the only llama_cpp
importer) and `store` (the only boto3 importer) → `formats` (pure). Below `api` nothing knows HTTP,
and the model-call path never imports a wire format's shaper (shapers import it, not the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

HANDLER = REPO / "handler"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> dict[str, set[str]]:
    return {str(path.relative_to(REPO)): _imports(path) for path in (HANDLER / package).rglob("*.py")}


def _importers(root: str) -> set[str]:
    return {str(path.relative_to(HANDLER)).split("/")[0] for path in HANDLER.rglob("*.py")
            if any(name == root or name.startswith(root + ".") for name in _imports(path))}


@pytest.mark.parametrize(("library", "owner"), [("llama_cpp", "engine"), ("boto3", "store"), ("botocore", "store")])
def test_one_package_imports_each_native_library(library, owner):
    assert _importers(library) == {owner}


@pytest.mark.parametrize("package", ["engine", "store", "formats"])
def test_below_api_nothing_knows_http(package):
    for module, names in _modules(package).items():
        assert not any(name.split(".")[0] in ("litestar", "granian", "httpx") or name.startswith("handler.api")
                       for name in names), module


def test_formats_are_pure():
    for module, names in _modules("formats").items():
        assert not {name for name in names if name.startswith("handler.")} - {
            name for name in names if name.startswith("handler.formats")}, module
        assert not any(name.split(".")[0] in ("os", "pathlib", "socket", "subprocess", "threading", "asyncio")
                       for name in names), module


def test_the_model_call_path_imports_no_shaper_and_routes_do_not_repeat_it():
    assert not any(name.startswith(("handler.api.answers", "handler.api.routes"))
                   for name in _imports(HANDLER / "api" / "calls.py"))
    for module, names in _modules("api/routes").items():
        assert "handler.engine.cache" not in names and "handler.api.auth" not in names, module  # calls.py leases
