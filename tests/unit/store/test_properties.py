"""Property-based checks (hypothesis) of the inputs that reach the file system: model names and the
manifest loader never raise anything but their own typed error, and never let a path through."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from handler.store.catalog import local_path
from handler.store.manifest import ManifestError, parse_manifest
from handler.store.names import is_valid_model_name

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=500, deadline=None)
@given(name=ANY_TEXT)
def test_valid_names_are_never_paths(name):
    if is_valid_model_name(name):
        assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
        assert not name.startswith((".", "-")) and len(name) <= 128


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_the_manifest_loader_only_raises_manifest_errors(text):
    try:
        parse_manifest(text)
    except ManifestError:
        pass


@settings(max_examples=300, deadline=None)
@given(key=st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00\"\\\n\r"), min_size=1, max_size=60))
def test_s3_sources_always_land_inside_the_model_dir(tmp_path_factory, key):
    model_dir = tmp_path_factory.mktemp("volume")
    manifest = f'[[models]]\nname = "m"\nsource = "s3://bucket/{key}"\n'
    try:
        (spec,) = parse_manifest(manifest)
    except ManifestError:
        return
    path = local_path(model_dir, spec)
    assert path.parent == model_dir and path.name.endswith(".gguf") and not path.name.startswith(".")
