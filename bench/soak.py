"""`just soak`: a bounded load and soak test on loopback that stops by itself.

Mixed traffic (streamed and plain chat, some with `n` > 1, completions of several prompts,
embeddings) at 4× the server's slot count for `--minutes`, a share of streaming clients
disconnecting mid-stream. Afterwards it reports: status counts (5xx
other than the intended 429/503 fail the run), p50/p99 latency, the worker's RSS after warm-up and
at the end, and its thread and file-descriptor counts before and after. Exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

from bench import servers
from bench.run import MODEL_DIR

ALLOWED_REFUSALS = {429, 503}


def _worker_stats(server: servers.Server) -> dict[str, float]:
    pid = max([server.process.pid] + servers._children(server.process.pid))
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def _one_request(client: httpx.Client, base_url: str, rng: random.Random) -> tuple[int, float]:
    kind, started = rng.choice(["stream", "stream", "chat", "embed", "completions"]), time.perf_counter()
    prompt = f"[{rng.random():.6f}] Write a few lines about the sea."
    if kind == "embed":
        response = client.post(f"{base_url}/v1/embeddings", json={"model": "smollm2-135m-embed",
                                                                   "input": [prompt] * rng.randint(1, 8)})
        return response.status_code, time.perf_counter() - started
    if kind == "completions":  # several prompts and choices: one request, more sequences than slots
        response = client.post(f"{base_url}/v1/completions", json={
            "model": "smollm2-135m", "prompt": [prompt] * rng.randint(1, 3), "n": rng.randint(1, 3),
            "max_tokens": rng.randint(8, 32)})
        return response.status_code, time.perf_counter() - started
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": rng.randint(8, 64), "stream": kind == "stream", "n": rng.choice([1, 1, 1, 2, 5])}
    if kind == "chat":
        response = client.post(f"{base_url}/v1/chat/completions", json=body)
        return response.status_code, time.perf_counter() - started
    with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        status = response.status_code
        for count, _ in enumerate(response.iter_lines()):
            if rng.random() < 0.02 and count > 2:  # disconnect mid-stream
                break
    return status, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    clients, deadline = args.slots * 4, time.monotonic() + args.minutes * 60
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    with servers.ours(MODEL_DIR, args.threads, parallel=args.slots) as server:
        warm_until = time.monotonic() + min(30.0, args.minutes * 15)
        snapshots: dict[str, dict[str, float]] = {"start": _worker_stats(server)}

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(timeout=120) as client:
                while time.monotonic() < deadline:
                    try:
                        status, seconds = _one_request(client, server.base_url, rng)
                    except httpx.HTTPError:
                        status, seconds = 0, 0.0
                    with lock:
                        statuses[status] += 1
                        latencies.append(seconds)

        workers = [threading.Thread(target=client_loop, args=(seed,), daemon=True) for seed in range(clients)]
        for worker in workers:
            worker.start()
        while time.monotonic() < warm_until:
            time.sleep(1)
        snapshots["warm"] = _worker_stats(server)
        for worker in workers:
            worker.join(timeout=args.minutes * 60 + 180)
        time.sleep(2)
        snapshots["end"] = _worker_stats(server)
        healthy = httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    errors = {status: n for status, n in statuses.items() if status >= 500 and status not in ALLOWED_REFUSALS or status == 0}
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    growth = snapshots["end"]["rss_mb"] - snapshots["warm"]["rss_mb"]
    print(f"requests: {sum(statuses.values())} over {args.minutes:g} min from {clients} clients; statuses {dict(statuses)}")
    print(f"latency p50 {statistics.median(latencies):.2f}s, p99 {p99:.2f}s")
    print(f"worker RSS MB start/warm/end: {snapshots['start']['rss_mb']:.0f}/{snapshots['warm']['rss_mb']:.0f}/"
          f"{snapshots['end']['rss_mb']:.0f} (growth after warm-up {growth:+.0f} MB, bound 50)")
    print(f"threads warm/end: {snapshots['warm']['threads']}/{snapshots['end']['threads']}; "
          f"fds warm/end: {snapshots['warm']['fds']}/{snapshots['end']['fds']}")
    failed = bool(errors) or not healthy or growth > 50 or snapshots["end"]["fds"] > snapshots["warm"]["fds"] + 8
    print("FAILED" if failed else "passed", f"(unexpected errors: {errors})" if errors else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
