import pytest

from handler.errors import ModelNotFound
from handler.store.catalog import ModelCatalog, local_path
from handler.store.manifest import ModelSpec


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
    assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source="s3://b/dir/file.gguf")) == tmp_path / "file.gguf"
    assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source="/abs/x.gguf")).as_posix() == "/abs/x.gguf"
    assert local_path(tmp_path, ModelSpec(name="a", kind="chat", source="rel.gguf")) == tmp_path / "rel.gguf"
