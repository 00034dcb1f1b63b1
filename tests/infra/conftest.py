"""Terraform under infra/, parsed with python-hcl2 (no provider registry is reachable here, so
`terraform validate` cannot run; these tests check what the configuration says)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.conftest import REPO

INFRA = REPO / "infra"


def parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(handle)


def value(block: dict[str, Any], name: str, default: Any = None) -> Any:
    """An attribute's value (python-hcl2 wraps each one in a one-element list)."""
    raw = block.get(name)
    return raw[0] if isinstance(raw, list) and len(raw) == 1 else (default if raw is None else raw)


def blocks(block: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(block.get(name, []))


class Module:
    def __init__(self, directory: Path) -> None:
        self.files = {path.name: parse(path) for path in sorted(directory.glob("*.tf"))}

    def _all(self, kind: str) -> list[dict[str, Any]]:
        return [entry for parsed in self.files.values() for entry in parsed.get(kind, [])]

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return next(entry[kind][name] for entry in self._all("resource") if kind in entry and name in entry[kind])

    def resources(self, kind: str) -> list[dict[str, Any]]:
        return [body for entry in self._all("resource") if kind in entry for body in entry[kind].values()]

    def data(self, kind: str, name: str) -> dict[str, Any]:
        return next(entry[kind][name] for entry in self._all("data") if kind in entry and name in entry[kind])

    def policy_documents(self) -> list[dict[str, Any]]:
        return [body for entry in self._all("data") if "aws_iam_policy_document" in entry
                for body in entry["aws_iam_policy_document"].values()]

    def variable(self, name: str) -> dict[str, Any]:
        return next(entry[name] for entry in self._all("variable") if name in entry)

    def outputs(self) -> set[str]:
        return {name for entry in self._all("output") for name in entry}


@pytest.fixture(scope="session")
def modules() -> dict[str, Module]:
    return {path.name: Module(path) for path in sorted((INFRA / "modules").iterdir()) if path.is_dir()}
