"""The catalog: every model this server can serve, and where its file lives on the local volume.

Models come from the manifest and from `*.gguf` files dropped into MODEL_DIR without an entry (served
under their file name, as embedding models when the name contains "embed"). Requests rescan the
directory when a listing is asked for or an unknown name is requested, so a file copied in later is
served without a restart; those rescans run off the event loop, one at a time and at most once per
RESCAN_INTERVAL_S, so a flood of unknown names costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import attrs

from handler.errors import ModelNotFound
from handler.store.manifest import ManifestError, ModelKind, ModelSpec
from handler.store.names import is_valid_model_name

log = logging.getLogger(__name__)


def local_path(model_dir: Path, spec: ModelSpec) -> Path:
    """Where `spec`'s GGUF lives (or will live, once synced) on the local volume.

    A synced object gets a name of its own, `FILE.DIGEST.gguf`, DIGEST derived from its bucket, key
    and pinned version: `s3://b/v1/model.gguf` and `s3://b/v2/model.gguf` no longer overwrite each
    other, while entries naming the same object share one file."""
    if spec.is_remote:
        where = spec.source.removeprefix("s3://")
        identity = f"{where}?versionId={spec.version_id or ''}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return model_dir / f"{PurePosixPath(where).name.removesuffix('.gguf')}.{digest}.gguf"
    path = Path(spec.source)
    return path if path.is_absolute() else model_dir / path


def legacy_path(model_dir: Path, spec: ModelSpec) -> Path:
    """Where earlier versions kept a synced object: MODEL_DIR/FILE, whatever its bucket and key."""
    return model_dir / PurePosixPath(spec.source.removeprefix("s3://")).name


def check_distinct_paths(model_dir: Path, specs: Iterable[ModelSpec]) -> None:
    """Entries may share a file only when they name the same source."""
    sources: dict[Path, tuple[str, tuple[str, str | None]]] = {}
    for spec in specs:
        path = local_path(model_dir, spec)
        # A local file is its own source, however the entry spells its path.
        identity = (spec.source, spec.version_id) if spec.is_remote else (str(path), None)
        first = sources.setdefault(path, (spec.name, identity))
        if first[1] != identity:
            raise ManifestError(f"models '{first[0]}' and '{spec.name}' have different sources but the same local "
                                f"file {path.name}: rename one of the files")


RESCAN_INTERVAL_S = 1.0


@attrs.define
class ModelCatalog:
    model_dir: Path
    declared: tuple[ModelSpec, ...]
    clock: Callable[[], float] = time.monotonic
    _discovered: dict[str, ModelSpec] = attrs.field(factory=dict, init=False)
    _last_scan: float | None = attrs.field(default=None, init=False)
    _scanning: asyncio.Future[None] | None = attrs.field(default=None, init=False)

    def path_of(self, spec: ModelSpec) -> Path:
        return local_path(self.model_dir, spec)

    def legacy_path_of(self, spec: ModelSpec) -> Path:
        return legacy_path(self.model_dir, spec)

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
        return self._known()

    async def find(self, name: str) -> ModelSpec:
        """`get` for requests: an unknown name rescans off the loop, at most once per interval."""
        if not is_valid_model_name(name):
            raise ModelNotFound(name[:200])
        spec = self._lookup(name)
        if spec is None:
            await self._rescan_if_due()
            spec = self._lookup(name)
        if spec is None:
            raise ModelNotFound(name)
        return spec

    async def list_all(self) -> list[ModelSpec]:
        """`all` for requests."""
        await self._rescan_if_due()
        return self._known()

    def _known(self) -> list[ModelSpec]:
        return [*self.declared, *self._discovered.values()]

    async def _rescan_if_due(self) -> None:
        if self._scanning is None:
            if self._last_scan is not None and self.clock() - self._last_scan < RESCAN_INTERVAL_S:
                return
            self._last_scan = self.clock()
            self._scanning = asyncio.ensure_future(asyncio.to_thread(self.rescan))
            self._scanning.add_done_callback(lambda _: setattr(self, "_scanning", None))
        await asyncio.shield(self._scanning)

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
            kind: ModelKind = "embedding" if "embed" in name.lower() else "chat"
            found[name] = ModelSpec(name=name, kind=kind, source=file.name, declared=False)
        self._discovered = found

    def _lookup(self, name: str) -> ModelSpec | None:
        for spec in self.declared:
            if spec.name == name:
                return spec
        return self._discovered.get(name)
