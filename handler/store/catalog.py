"""The catalog: every model this server can serve, and where its file lives on the local volume.

Models come from the manifest and from `*.gguf` files dropped into MODEL_DIR without an entry (served
under their file name, as embedding models when the name contains "embed"). The directory is
rescanned when a listing is asked for or an unknown name is requested, so a file copied in later is
served without a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import attrs

from handler.errors import ModelNotFound
from handler.store.manifest import ModelSpec
from handler.store.names import is_valid_model_name

log = logging.getLogger(__name__)


def local_path(model_dir: Path, spec: ModelSpec) -> Path:
    """Where `spec`'s GGUF lives (or will live, once synced) on the local volume."""
    if spec.is_remote:
        # s3://bucket/dir/file.gguf → MODEL_DIR/file.gguf; specs sharing an object share the file.
        return model_dir / PurePosixPath(spec.source.removeprefix("s3://")).name
    path = Path(spec.source)
    return path if path.is_absolute() else model_dir / path


@attrs.define
class ModelCatalog:
    model_dir: Path
    declared: tuple[ModelSpec, ...]
    _discovered: dict[str, ModelSpec] = attrs.field(factory=dict, init=False)

    def path_of(self, spec: ModelSpec) -> Path:
        return local_path(self.model_dir, spec)

    def get(self, name: str) -> ModelSpec:
        if not is_valid_model_name(name):
            raise ModelNotFound(name[:200])
        spec = self._lookup(name)
        if spec is None:
            self.rescan()
            spec = self._lookup(name)
        if spec is None:
            raise ModelNotFound(name)
        return spec

    def all(self) -> list[ModelSpec]:
        self.rescan()
        return [*self.declared, *self._discovered.values()]

    def rescan(self) -> None:
        claimed = {self.path_of(spec).resolve() for spec in self.declared}
        names = {spec.name for spec in self.declared}
        found: dict[str, ModelSpec] = {}
        try:
            files = sorted(self.model_dir.glob("*.gguf"))
        except OSError:
            files = []
        for file in files:
            name = file.name.removesuffix(".gguf")
            if file.resolve() in claimed or name in names:
                continue
            if not is_valid_model_name(name):
                log.warning("skipping %s: its name is not a valid model id", file.name)
                continue
            kind = "embedding" if "embed" in name.lower() else "chat"
            found[name] = ModelSpec(name=name, kind=kind, source=file.name, declared=False)
        self._discovered = found

    def _lookup(self, name: str) -> ModelSpec | None:
        for spec in self.declared:
            if spec.name == name:
                return spec
        return self._discovered.get(name)
