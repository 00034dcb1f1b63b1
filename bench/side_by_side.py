"""The demo model's ratios against its peers, measured side by side: every server stays up (an idle one
takes no CPU) and each round measures every side once, so a slow minute of this shared machine falls on
all of them alike instead of on whichever side happened to run then. The same for cold starts: each
round starts raw llama-cpp-python, a bare framework app and ours, one after another."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench import servers, workloads
from bench.common import free_port

STREAMS = 4  # the aggregate compared with peers (llama-server -np 4 has as many slots)
# Rounds at least: single figures here move by 10-40% from minute to minute, and a slow minute only ever
# slows a side down, so the best of several rounds is each side's figure.
ROUNDS = 5


def stream_rounds(sides: dict[str, servers.Server], tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per side, the best of max(`repeats`, ROUNDS) rounds: single-stream decode tok/s, aggregate tok/s of
    `STREAMS` streams, and the fewest of them completed in any round."""
    for side in sides.values():
        workloads.stream_once(side.base_url, side.model, 8)  # warm up
    single: dict[str, list[float]] = {name: [] for name in sides}
    together: dict[str, list[float]] = {name: [] for name in sides}
    completed: dict[str, int] = dict.fromkeys(sides, STREAMS)
    for _ in range(max(repeats, ROUNDS)):
        for name, side in sides.items():
            single[name].append(workloads.stream_once(side.base_url, side.model, tokens).decode_rate)
            rate, done = workloads.concurrent_streams(side.base_url, side.model, tokens, STREAMS)
            together[name].append(rate)
            completed[name] = min(completed[name], done)
    return {name: {"single": max(single[name]), "four": max(together[name]), "completed_of_4": completed[name]}
            for name in sides}


def framework_ready(repo: Path) -> float:
    """Seconds from process start to the first answer of a bare Litestar app under granian (one route,
    nothing else imported): what the framework alone takes to start here."""
    port = free_port()
    started = time.perf_counter()
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--factory", "bench.bare_app:build"]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        servers.wait_ready(f"http://127.0.0.1:{port}/health", process, 60, interval=0.005)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)
