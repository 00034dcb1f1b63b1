"""The local model volume (MODEL_DIR): making sure a model's GGUF is present before it loads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs

from handler.errors import ServiceUnavailable
from handler.store.catalog import ModelCatalog
from handler.store.manifest import ModelSpec


@attrs.define
class LocalVolume:
    catalog: ModelCatalog

    async def ensure_local(self, spec: ModelSpec) -> Path:
        path = self.catalog.path_of(spec)
        if await asyncio.to_thread(path.is_file):
            return path
        if spec.is_remote:
            raise ServiceUnavailable(f"model '{spec.name}' is not on the local volume and S3 sync is not enabled",
                                     code="model_not_synced")
        raise ServiceUnavailable(f"model '{spec.name}': its file {path.name} is missing from the model directory",
                                 code="model_file_missing")
