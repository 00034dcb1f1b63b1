"""Command line: `python -m handler serve` (granian with settings from the environment) and
`python -m handler pull NAME…` (prepare a model volume ahead of time, with a progress bar).

`serve` is on every cold start's path (the image's command): before it runs granian it reads the
settings and the manifest, and nothing heavier (no llama.cpp, no S3 client, no web framework:
measured here, importing all that cost 0.26 s before granian even started); the worker checks the
models' llama.cpp options as it builds the app, and a worker that fails that way stops granian."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from argparse import ArgumentParser
from typing import TYPE_CHECKING

from handler.errors import ServerError
from handler.settings import Settings, SettingsError
from handler.store.catalog import check_distinct_paths
from handler.store.manifest import ManifestError, load_manifest

if TYPE_CHECKING:
    from rich.progress import Progress

    from handler.store.model_store import ModelStore


async def _pull_one(store: ModelStore, name: str, bar: Progress) -> bool:
    spec = store.catalog.get(name)
    row = bar.add_task(name, total=spec.size)
    job = asyncio.ensure_future(store.ensure_local(spec))
    while not job.done():
        await asyncio.wait({job}, timeout=0.2)
        if (progress := store.progress_of(spec)) is not None:
            bar.update(row, completed=progress.bytes_done, total=progress.total or spec.size)
    try:
        path = job.result()
    except ServerError as exc:
        bar.console.print(f"[red]{name}: {exc.message}")
        return False
    bar.update(row, completed=path.stat().st_size, total=path.stat().st_size)
    return True


async def pull(store: ModelStore, names: list[str]) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    with Progress(*columns) as bar:
        results = [await _pull_one(store, name, bar) for name in names]
    return 0 if all(results) else 1


def granian_arguments(settings: Settings, environ: dict[str, str]) -> list[str]:
    """granian's command-line arguments for these settings. Workers and threads come from WORKERS and
    GRANIAN_* variables; granian's kill timeout stays above our drain timeout so a drain can finish.
    A worker that dies (a crash inside llama.cpp) is started again instead of taking the server down;
    configuration errors never reach that loop, since `main` checks them before granian starts."""
    return ["--interface", "asgi", "--host", settings.host, "--port", str(settings.port),
            "--workers", environ.get("WORKERS", "1"), "--respawn-failed-workers",
            "--workers-kill-timeout", str(int(settings.drain_timeout_s) + 5), "--factory", "handler.serve:build"]


class CannotServe(Exception):
    """granian stopped on an error of its own (a port in use, say): one line, not a Rust backtrace."""


def run_granian(arguments: list[str]) -> None:
    """granian's own command line, run in this process rather than exec'd: its workers fork from this
    process and inherit what it imported, and the start skips a second interpreter (measured here, the
    demo model: process start → first token 0.83 → 0.66 s, medians of six interleaved rounds). Signals
    reach granian's main loop as before; click ends the process with granian's exit status."""
    from granian.cli import cli

    try:
        cli.main(args=arguments, prog_name="granian", auto_envvar_prefix="GRANIAN")
    except RuntimeError as exc:  # granian's own failures, e.g. its socket: "Address already in use (os error 98)"
        first_line = next(iter(str(exc).splitlines()), type(exc).__name__)  # the rest: a Rust backtrace
        raise CannotServe(f"granian could not serve: {first_line}") from None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m handler", description="serverless-gguf")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run granian on HOST:PORT in this process (signals reach it)")
    pull_parser = commands.add_parser("pull", help="download models of the manifest into MODEL_DIR")
    pull_parser.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        if args.command == "serve":
            check_distinct_paths(settings.model_dir, tuple(load_manifest(settings.manifest_path)))
            run_granian(granian_arguments(settings, dict(os.environ)))
            return 0
        return _pull(settings, args.names)
    except (SettingsError, ManifestError, ServerError, CannotServe) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


def _pull(settings: Settings, names: list[str]) -> int:
    from handler.engine.llama_options import OptionsError
    from handler.wiring import build_catalog, build_store, load_checked_manifest

    try:
        declared = load_checked_manifest(settings)
    except OptionsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = build_store(settings, build_catalog(settings, declared))
    try:
        return asyncio.run(_pull_until_terminated(store, names))
    except KeyboardInterrupt:
        print("interrupted: the downloads under way were stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    except asyncio.CancelledError:
        print("terminated: the downloads under way were stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        store.close()  # stops the transfers (and lock waits) still running, or exiting would wait for them


async def _pull_until_terminated(store: ModelStore, names: list[str]) -> int:
    """`pull`, which SIGTERM (an init container stopped) ends as Ctrl-C does: the pull is cancelled and
    its store closed, so no partial file stays behind (before, Python's default action killed it)."""
    task = asyncio.current_task()
    assert task is not None  # asyncio.run's own
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await pull(store, names)


def sagemaker_serve() -> int:
    """The image's `serve` command: SageMaker starts the container with `serve` as its argument and
    sends every request to port 8080, whatever the image's PORT says."""
    os.environ["PORT"] = "8080"
    return main(["serve"])


if __name__ == "__main__":
    sys.exit(main())
