"""The command line: `serve` checks settings and manifest, then runs granian in this process; SageMaker's
`serve` command listens on 8080 whatever PORT the image sets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import granian.cli
import pytest

import handler.__main__ as cli
from tests.conftest import REPO


@pytest.fixture
def granian_runs(monkeypatch):
    calls = []

    def run_granian(arguments):
        calls.append(arguments)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_granian", run_granian)
    return calls


def test_serve_runs_granian_with_the_early_loading_entry(granian_runs, monkeypatch):
    monkeypatch.setenv("PORT", "9100")
    with pytest.raises(SystemExit):
        cli.main(["serve"])
    (command,) = granian_runs
    assert command[command.index("--port") + 1] == "9100" and command[-1] == "handler.serve:build"


def test_sagemakers_serve_listens_on_8080(granian_runs, monkeypatch):
    monkeypatch.setenv("PORT", "8000")  # the image's
    with pytest.raises(SystemExit):
        cli.sagemaker_serve()
    assert granian_runs[0][granian_runs[0].index("--port") + 1] == "8080"


def test_a_bad_manifest_stops_serve_with_a_message(tmp_path, monkeypatch, capsys, granian_runs):
    manifest = tmp_path / "bad.toml"
    manifest.write_text('[[models]]\nname = "x"\nkind = "nope"\nsource = "a.gguf"\n')
    monkeypatch.setenv("MODELS_MANIFEST", str(manifest))
    assert cli.main(["serve"]) == 2 and not granian_runs
    assert "kind must be" in capsys.readouterr().err


def test_granian_runs_in_this_process_with_its_environment_variables(monkeypatch):
    """granian's own command line runs here (its workers fork from this process), GRANIAN_* variables
    included, and its exit ends the command."""
    servers = []

    class Server:
        def __init__(self, target, **options):
            servers.append((target, options))

        def serve(self):
            pass

    monkeypatch.setattr(granian.cli, "Server", Server)
    monkeypatch.setenv("GRANIAN_BLOCKING_THREADS", "3")
    monkeypatch.setenv("PORT", "9101")
    with pytest.raises(SystemExit) as stop:
        cli.main(["serve"])
    assert stop.value.code == 0
    ((target, options),) = servers
    assert target == "handler.serve:build" and options["factory"] is True
    assert options["port"] == 9101 and options["blocking_threads"] == 3


def test_serve_forks_granians_workers_before_llama_cpp_is_imported():
    """granian's workers fork from the serve process, so it must not have imported llama.cpp (a CUDA
    context made before a fork is unusable in the child), the S3 client or the framework."""
    probe = ("import sys, handler.__main__ as cli\n"
             "cli.run_granian = lambda arguments: print(sorted(m for m in ('llama_cpp', 'numpy', 'boto3', "
             "'litestar') if m in sys.modules))\n"
             "cli.main(['serve'])\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_a_port_in_use_stops_serve_with_one_line():
    """granian's bind error, as one line and status 2 like the other start-up errors (before, a Python
    traceback and a Rust backtrace)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(taken.getsockname()[1]), "WARM_MODELS": ""}
        result = subprocess.run([sys.executable, "-m", "handler", "serve"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: granian could not serve: Address already in use")
    assert "Traceback" not in result.stderr
