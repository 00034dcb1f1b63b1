"""The server process's entry: `granian --interface asgi --factory handler.serve:build`.

Before the web framework is imported, the warm set's first model starts loading on a thread of its
own (see `engine.early`): llama.cpp reads its weights and makes its context in C, without the GIL,
while Python imports Litestar and builds the app, instead of after the port opened. A model that is
only in S3 starts syncing then (the store's threads: network and disk, mostly without the GIL) and is
read as soon as it is verified. Deciding what to
load (settings, manifest, options) runs first, on this thread: its imports are the app's own, and two
threads importing Python modules at once only take turns. `handler.app:build` serves the same app
without the overlap."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("handler")


def _start_early(environ: Mapping[str, str]) -> None:
    try:
        from handler.settings import Settings
        from handler.wiring import start_early_weights

        start_early_weights(Settings.from_env(environ))
    except Exception:  # noqa: BLE001 - the usual start meets the same problem and reports it properly
        log.debug("no early start", exc_info=True)


@contextlib.contextmanager
def without_collections() -> Iterator[None]:
    """The start with Python's cyclic garbage collector off, then its objects set aside for good.

    Importing and building the app makes ~80k objects that live as long as the process: collections
    during the start walk them and free nothing (in-process import and build, eight interleaved rounds:
    median 625 → 540 ms with it off). Frozen afterwards (`gc.freeze`), later collections skip them: a
    full collection walked them for ~54 ms here, holding the GIL while every stream waited."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def build() -> Any:
    from handler.logs import configure_logging

    with without_collections():
        configure_logging()  # before the early start: a sync it begins logs from the store's threads
        _start_early(os.environ)
        from handler.app import build as build_app

        return build_app()
