"""Start-up checks of the manifest against the environment's defaults, and what the start begins early."""

import attrs
import pytest

from handler.engine.early import EARLY_WEIGHTS
from handler.engine.llama_options import OptionsError
from handler.settings import Settings
from handler.wiring import build_catalog, load_checked_manifest, start_early_weights, take_early_store


def _settings(tmp_path, options, environ=None):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "m"\nkind = "chat"\nsource = "m.gguf"\n[models.options]\n{options}\n')
    return Settings.from_env({"MODELS_MANIFEST": str(manifest), **(environ or {})})


@pytest.mark.parametrize(("options", "environ"), [
    ("n_batch = 2", {}),  # N_PARALLEL defaults to 4
    ("n_parallel = 8", {"N_BATCH": "4"}),
    ("n_batch = 3\nn_parallel = 4", {}),
])
def test_a_model_whose_batch_cannot_hold_its_sequences_is_refused(tmp_path, options, environ):
    with pytest.raises(OptionsError, match=r"model 'm': n_batch=\d+ must be at least n_parallel=\d+"):
        load_checked_manifest(_settings(tmp_path, options, environ))


def test_a_model_that_fits_passes(tmp_path):
    load_checked_manifest(_settings(tmp_path, "n_batch = 8\nn_parallel = 8"))


def _remote_warm_settings(tmp_path, monkeypatch, **environ):
    """A warm model only in S3, whose S3 refuses connections at once (a closed loopback port)."""
    from tests.integration.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[models]]\nname = "r"\nsource = "s3://models/r.gguf"\nwarm = true\n')
    return Settings.from_env({"MODELS_MANIFEST": str(manifest), "MODEL_DIR": str(tmp_path / "volume"),
                              "S3_MAX_ATTEMPTS": "1", **environ})


def test_the_app_takes_the_store_its_start_began_syncing_with_once(tmp_path, monkeypatch):
    settings = _remote_warm_settings(tmp_path, monkeypatch)
    assert start_early_weights(settings) is None  # nothing to read until the sync has verified the file
    declared = load_checked_manifest(settings)
    store = take_early_store(settings, declared)
    assert store is not None and store.catalog.declared == declared
    assert take_early_store(settings, declared) is None  # taken once
    store.close()


def test_a_store_begun_for_other_settings_is_closed_not_taken(tmp_path, monkeypatch):
    settings = _remote_warm_settings(tmp_path, monkeypatch)
    start_early_weights(settings)
    other = attrs.evolve(settings, n_ctx=settings.n_ctx * 2)
    assert take_early_store(other, load_checked_manifest(other)) is None
    assert take_early_store(settings, load_checked_manifest(settings)) is None  # closed, not kept for later


def test_a_file_already_on_the_volume_is_read_at_once_without_a_store(tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[models]]\nname = "m"\nsource = "m.gguf"\nwarm = true\n')
    (tmp_path / "m.gguf").write_bytes(b"not a model")
    settings = Settings.from_env({"MODELS_MANIFEST": str(manifest), "MODEL_DIR": str(tmp_path)})
    try:
        assert start_early_weights(settings) == tmp_path / "m.gguf"
        assert take_early_store(settings, load_checked_manifest(settings)) is None
    finally:
        EARLY_WEIGHTS.release()  # the read fails (not a GGUF file); nothing is left behind


def test_a_remote_file_on_the_volume_is_read_at_once_while_the_store_checks_it(tmp_path, monkeypatch):
    settings = _remote_warm_settings(tmp_path, monkeypatch)
    (path,) = [build_catalog(settings, load_checked_manifest(settings)).path_of(spec)
               for spec in load_checked_manifest(settings)]
    path.parent.mkdir()
    path.write_bytes(b"not a model")
    try:
        assert start_early_weights(settings) == path
        store = take_early_store(settings, load_checked_manifest(settings))
        assert store is not None  # its check (a HEAD: no sha256 in the manifest) began with the process
        store.close()
    finally:
        EARLY_WEIGHTS.release()
