import asyncio
import re
import threading

import pytest

from handler.errors import ModelNotFound
from handler.store.catalog import RESCAN_INTERVAL_S, ModelCatalog, check_distinct_paths, local_path
from handler.store.manifest import ManifestError, ModelSpec


def _touch(path):
    path.write_bytes(b"GGUF")
    return path


def test_declared_and_discovered_models(tmp_path):
    _touch(tmp_path / "declared.gguf")
    _touch(tmp_path / "extra-model.gguf")
    _touch(tmp_path / "nomic-embed-text.gguf")
    _touch(tmp_path / "not a valid name.gguf")
    catalog = ModelCatalog(tmp_path, (ModelSpec(name="main", kind="chat", source="declared.gguf"),))
    listed = {spec.name: spec.kind for spec in catalog.all()}
    assert listed == {"main": "chat", "extra-model": "chat", "nomic-embed-text": "embedding"}
    assert catalog.path_of(catalog.get("extra-model")) == tmp_path / "extra-model.gguf"


def test_a_file_copied_in_later_is_found(tmp_path):
    catalog = ModelCatalog(tmp_path, ())
    with pytest.raises(ModelNotFound):
        catalog.get("late")
    _touch(tmp_path / "late.gguf")
    assert catalog.get("late").name == "late"


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "a\x00b", "x" * 5000, "%2e%2e"])
def test_bad_names_never_reach_the_file_system(tmp_path, name):
    with pytest.raises(ModelNotFound) as raised:
        ModelCatalog(tmp_path, ()).get(name)
    assert len(raised.value.message) < 400


def test_local_paths(tmp_path):
    synced = local_path(tmp_path, ModelSpec(name="a", kind="chat", source="s3://b/dir/file.gguf"))
    assert synced.parent == tmp_path and re.fullmatch(r"file\.[0-9a-f]{12}\.gguf", synced.name)
    assert local_path(tmp_path, ModelSpec(name="other", kind="embedding", source="s3://b/dir/file.gguf")) == synced
    for elsewhere in ("s3://b/v2/file.gguf", "s3://c/dir/file.gguf"):
        assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source=elsewhere)) != synced
    pinned = ModelSpec(name="a", kind="chat", source="s3://b/dir/file.gguf", version_id="v1")
    assert local_path(tmp_path, pinned) != synced
    assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source="/abs/x.gguf")).as_posix() == "/abs/x.gguf"
    assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source="rel.gguf")) == tmp_path / "rel.gguf"


def test_different_sources_may_not_share_a_file(tmp_path):
    remote = ModelSpec(name="remote", kind="chat", source="s3://b/dir/file.gguf")
    clash = ModelSpec(name="local", kind="chat", source=local_path(tmp_path, remote).name)
    with pytest.raises(ManifestError, match="'remote' and 'local' have different sources"):
        check_distinct_paths(tmp_path, (remote, clash))
    check_distinct_paths(tmp_path, (remote, ModelSpec(name="twin", kind="embedding", source=remote.source)))
    relative = ModelSpec(name="rel", kind="chat", source="a.gguf")
    check_distinct_paths(tmp_path, (relative, ModelSpec(name="abs", kind="chat", source=str(tmp_path / "a.gguf"))))


def test_requests_rescan_off_the_loop_at_most_once_per_interval(tmp_path, monkeypatch):
    now = [100.0]
    catalog = ModelCatalog(tmp_path, (), clock=lambda: now[0])
    scans = []
    rescan = ModelCatalog.rescan
    monkeypatch.setattr(ModelCatalog, "rescan", lambda self: (scans.append(threading.current_thread()), rescan(self)))

    async def flood():
        results = await asyncio.gather(*(catalog.find(f"unknown-{index}") for index in range(200)),
                                       return_exceptions=True)
        assert all(isinstance(result, ModelNotFound) for result in results)

    asyncio.run(flood())
    assert len(scans) == 1 and scans[0] is not threading.main_thread()
    _touch(tmp_path / "late.gguf")
    with pytest.raises(ModelNotFound):  # within the interval: not seen yet
        asyncio.run(catalog.find("late"))
    now[0] += RESCAN_INTERVAL_S
    assert asyncio.run(catalog.find("late")).name == "late"
    assert len(scans) == 2
