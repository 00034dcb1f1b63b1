"""The command line: `serve` checks settings and manifest, then hands over to granian; SageMaker's
`serve` command listens on 8080 whatever PORT the image sets."""

from __future__ import annotations

import pytest

import handler.__main__ as cli


@pytest.fixture
def execs(monkeypatch):
    calls = []

    def execvp(file, args):
        calls.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execvp", execvp)
    return calls


def test_serve_execs_granian_with_the_early_loading_entry(execs, monkeypatch):
    monkeypatch.setenv("PORT", "9100")
    with pytest.raises(SystemExit):
        cli.main(["serve"])
    (command,) = execs
    assert command[command.index("--port") + 1] == "9100" and command[-1] == "handler.serve:build"


def test_sagemakers_serve_listens_on_8080(execs, monkeypatch):
    monkeypatch.setenv("PORT", "8000")  # the image's
    with pytest.raises(SystemExit):
        cli.sagemaker_serve()
    assert execs[0][execs[0].index("--port") + 1] == "8080"


def test_a_bad_manifest_stops_serve_with_a_message(tmp_path, monkeypatch, capsys, execs):
    manifest = tmp_path / "bad.toml"
    manifest.write_text('[[models]]\nname = "x"\nkind = "nope"\nsource = "a.gguf"\n')
    monkeypatch.setenv("MODELS_MANIFEST", str(manifest))
    assert cli.main(["serve"]) == 2 and not execs
    assert "kind must be" in capsys.readouterr().err
