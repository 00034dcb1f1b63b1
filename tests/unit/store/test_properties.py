"""Property-based checks (hypothesis) of the inputs that reach the file system: model names and the
manifest loader never raise anything but their own typed error, and never let a path through.

Strategies are built so most examples reach the assertion, and `assume` filters the rest: hypothesis
fails a test whose filter rejects nearly everything (its `filter_too_much` health check), so a
strategy that stops producing usable examples cannot pass silently."""

from __future__ import annotations

import contextlib

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from handler.store.catalog import local_path
from handler.store.manifest import ManifestError, parse_manifest
from handler.store.names import is_valid_model_name

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)
# Names near the valid set: the id alphabet plus the characters a path would need, so both sides of
# every rule (separators, "..", a leading dot or dash, the length limit) are exercised.
NEAR_NAMES = st.text(alphabet=st.sampled_from("abcdefXYZ0123456789_:+@" * 3 + ".-/\\\x00"), min_size=1,
                     max_size=140)


@settings(max_examples=500, deadline=None)
@given(name=NEAR_NAMES)
def test_valid_names_are_never_paths(name):
    assume(is_valid_model_name(name))
    assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
    assert not name.startswith((".", "-")) and len(name) <= 128


@settings(max_examples=300, deadline=None)
@given(name=NEAR_NAMES)
def test_names_with_path_characters_are_refused(name):
    assume(any(part in name for part in ("/", "\\", "..", "\x00")))
    assert not is_valid_model_name(name)


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_the_manifest_loader_only_raises_manifest_errors(text):
    with contextlib.suppress(ManifestError):
        parse_manifest(text)


# Printable ASCII (TOML strings take no control characters), without what would end the string.
KEY_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\"\\"),
                   min_size=1, max_size=60)


# Mostly keys the manifest accepts (any prefix, a plain `NAME.gguf` last segment), some it refuses.
VALID_KEYS = st.builds(lambda prefix, name: f"{prefix}/{name}.gguf", KEY_TEXT,
                       st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._ -]{0,20}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(VALID_KEYS, VALID_KEYS, KEY_TEXT))
def test_s3_sources_always_land_inside_the_model_dir(tmp_path_factory, key):
    model_dir = tmp_path_factory.mktemp("volume")
    manifest = f'[[models]]\nname = "m"\nsource = "s3://bucket/{key}"\n'
    try:
        (spec,) = parse_manifest(manifest)
    except ManifestError:
        spec = None
    assume(spec is not None)
    path = local_path(model_dir, spec)
    assert path.parent == model_dir and path.name.endswith(".gguf") and not path.name.startswith(".")
