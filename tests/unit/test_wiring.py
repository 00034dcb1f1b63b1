"""Start-up checks of the manifest against the environment's defaults."""

import pytest

from handler.engine.llama_options import OptionsError
from handler.settings import Settings
from handler.wiring import load_checked_manifest


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
