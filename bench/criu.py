"""Checkpointing a running server with CRIU and restoring it: what a platform that snapshots warmed
processes does (Modal, GKE pod snapshots), for the snapshot test and the bench.

CRIU is the one `CRIU` names, else the one `just fetch-criu` unpacks into the cache, else `criu` on PATH.
Two limits of CRIU 4.1 on current kernels shape how a server is checkpointed here: it reads
SO_PASSCRED from every socket, which kernels since 6.16 refuse on TCP sockets, so the server listens on a
unix socket; and it cannot dump one end of a connection whose other end is outside the process tree,
so no client keeps a connection open across the checkpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.servers import CACHE

# Established connections are refused (see above); locks and unix sockets to the outside are kept.
OPTIONS = ("--file-locks", "--ext-unix-sk")
EXIT_WAIT_S = 30


def command() -> str | None:
    candidates = [os.environ.get("CRIU"), str(CACHE / "criu" / "criu"), shutil.which("criu")]
    return next((path for path in candidates if path and Path(path).is_file()), None)


def problem() -> str | None:
    """Why CRIU cannot checkpoint a process here (None: it can)."""
    criu = command()
    if criu is None:
        return "no CRIU (just fetch-criu, or the Debian package criu)"
    check = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        errors = [line for line in (check.stderr + check.stdout).splitlines() if "Error" in line] or ["?"]
        return f"criu check fails on this kernel: {errors[0]} … {errors[-1]}"
    return None


def process_tree(root: int) -> list[int]:
    """`root` and its descendants."""
    found, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            children = [int(child) for task in os.listdir(f"/proc/{pid}/task")
                        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            children = []
        found += children
        frontier += children
    return found


def checkpoint(process: subprocess.Popen, images: Path) -> None:
    """Dump the process tree of `process` (a child of this one) into `images`; CRIU then ends it. Returns
    once every process of it is gone and reaped: a restore needs their ids free."""
    criu = command()
    assert criu is not None  # callers ask `problem()` first
    tree = process_tree(process.pid)
    _run([criu, "dump", "-t", str(process.pid), "-D", str(images), "-o", "dump.log", *OPTIONS], images / "dump.log")
    process.wait(EXIT_WAIT_S)
    _until_gone(tree)


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(tree: list[int], child: subprocess.Popen | None = None) -> None:
    """Kill every process of `tree` and wait until each is gone (reaped: a restore needs their ids), the
    one that is `child` of this process reaped here; a restored tree is no longer anyone's here."""
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if child is not None:
        child.wait(EXIT_WAIT_S)
    _until_gone(tree)


def _until_gone(tree: list[int]) -> None:
    deadline = time.monotonic() + EXIT_WAIT_S  # those this process did not start are reaped by their adopter
    while any(Path(f"/proc/{pid}").exists() for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.02)


def restore(images: Path) -> None:
    """Restore the tree dumped into `images`, detached: it runs on as the processes it was."""
    criu = command()
    assert criu is not None
    _run([criu, "restore", "-d", "-D", str(images), "-o", "restore.log", *OPTIONS], images / "restore.log")


def _run(arguments: list[str], log: Path) -> None:
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else done.stderr[-2000:]
        raise RuntimeError(f"{arguments[1]} failed ({done.returncode}):\n{tail}")
