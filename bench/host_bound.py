"""The host-bound decode, what a GPU exposes: a tiny model with Qwen3's 151,936-token vocabulary, whose
decode step is cheap next to each sequence's per-token host work (reading and sampling a full
vocabulary row, the Python around it). Greedy, non-streamed, usage-counted completions, 1 and 16 at a
time, against llama.cpp's decode-only limit (`llama-batched-bench` from the same sources: no sampling
at all) and llama-server (with and without `--backend-sampling`). Best of `repeats` for every side."""

from __future__ import annotations

import random
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import servers
from bench.tiny_model import write_tiny_model
from bench.workloads import CLIENT

MODEL = "tiny-qwen3-vocabulary"
STREAMS = (1, 16)
PROMPT_TOKENS = 128
# Our engine does not repack weights for the CPU (a repacked matmul computes a row differently with the
# batch's size, so replies would depend on what else decodes; `repack = true` in the manifest turns it
# on): every side here runs the same layout, so the comparison is of everything but the matmuls.
SAME_WEIGHTS = ("--no-repack",)
_STEP_METRICS = re.compile(r'^gguf_step(_host)?_seconds_(sum|count)\{model="[^"]+"\} (\S+)$', re.M)


def decode_limit(binary: str, model: Path, threads: int, tokens: int) -> dict[int, float]:
    """Decode tok/s per number of parallel sequences, as `llama-batched-bench` measures it (S_TG)."""
    context = max(STREAMS) * (PROMPT_TOKENS + tokens + 16)
    command = [binary, "-m", str(model), "-c", str(context), "-b", "2048", "-ub", "512", "-t", str(threads),
               "-fa", "on", *SAME_WEIGHTS, "-npp", str(PROMPT_TOKENS), "-ntg", str(tokens),
               "-npl", ",".join(map(str, STREAMS))]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    rates = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].isdigit() and cells[2].isdigit():  # PP | TG | B | N_KV | … | S_TG t/s | …
            rates[int(cells[2])] = float(cells[7])
    return rates


def _completion(base_url: str, model: str, tokens: int, seed: int) -> int:
    rng = random.Random(seed)  # a prompt of its own: nothing is reused from another request
    prompt = [rng.randrange(1000, 100_000) for _ in range(PROMPT_TOKENS)]
    response = CLIENT.post(f"{base_url}/v1/completions", json={
        "model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": False})
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


_seeds = iter(range(10**9))


def completions_rate(base_url: str, model: str, streams: int, tokens: int) -> float:
    """Generated tok/s of `streams` greedy completions sent at once, over the wall time."""
    seeds = [next(_seeds) for _ in range(streams)]
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        produced = sum(pool.map(lambda seed: _completion(base_url, model, tokens, seed), seeds))
    return produced / (time.perf_counter() - started)


def _step_totals(base_url: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for host, field, number in _STEP_METRICS.findall(CLIENT.get(f"{base_url}/metrics").text):
        key = ("host_" if host else "") + field
        totals[key] = totals.get(key, 0.0) + float(number)
    return totals


def best_rates(server: servers.Server, tokens: int, repeats: int) -> dict[int, float]:
    completions_rate(server.base_url, server.model, 2, 8)  # warm up
    return {streams: max(completions_rate(server.base_url, server.model, streams, tokens) for _ in range(repeats))
            for streams in STREAMS}


def ours_with_steps(model: Path, threads: int, tokens: int, repeats: int) -> tuple[dict[int, float], dict[str, float]]:
    """Our rates, and the mean step's total and host milliseconds at 16 streams (from /metrics)."""
    with tempfile.TemporaryDirectory() as work:
        manifest = Path(work) / "manifest.toml"
        manifest.write_text(f'[[models]]\nname = "{MODEL}"\nkind = "chat"\nsource = "{model.name}"\n')
        env = {"MODELS_MANIFEST": str(manifest), "N_CTX": "512"}
        with servers.ours(model.parent, threads, max(STREAMS), env=env, model=MODEL) as server:
            rates = best_rates(server, tokens, repeats)
            before = _step_totals(server.base_url)
            completions_rate(server.base_url, server.model, max(STREAMS), tokens)
            after = _step_totals(server.base_url)
    steps = after.get("count", 0) - before.get("count", 0)
    per_step = {"total_ms": 1000 * (after.get("sum", 0) - before.get("sum", 0)) / max(steps, 1),
                "host_ms": 1000 * (after.get("host_sum", 0) - before.get("host_sum", 0)) / max(steps, 1)}
    return rates, per_step


def measure(report, args, cache: Path) -> dict[str, object]:
    try:
        model = write_tiny_model(cache / "tiny-qwen3-vocabulary.gguf", cache)
    except (OSError, subprocess.SubprocessError) as exc:  # no npm, or no registry: say so, measure the rest
        report.add("host-bound decode", "skipped", f"could not make the tiny model: {exc}"[:100])
        return {}
    results: dict[str, object] = {}
    batched_bench = servers.llama_tool("llama-batched-bench")
    limit: dict[int, float] = {}
    if batched_bench is None:
        report.add("decode-only limit", "skipped", "no llama-batched-bench (just build-llama-server)")
    else:
        limit = {streams: max(decode_limit(batched_bench, model, args.threads, args.tokens)[streams]
                              for _ in range(args.repeats)) for streams in STREAMS}
        results["limit"] = limit
    ours, steps = ours_with_steps(model, args.threads, args.tokens, args.repeats)
    results["ours"], results["ours_steps_at_16"] = ours, steps
    for streams in STREAMS:
        share = f"{ours[streams] / limit[streams]:.2f} of the limit ({limit[streams]:.0f})" if limit else ""
        report.add(f"host-bound: ours, {streams} greedy requests, tok/s", f"{ours[streams]:.0f}", share)
    report.add("host-bound: ours at 16, mean step ms (host part)", f"{steps['total_ms']:.2f} ({steps['host_ms']:.2f})")
    binary = servers.llama_server_binary()
    for name, extra in (("llama-server -np 16", ()), ("llama-server -np 16 --backend-sampling", ("--backend-sampling",))):
        if binary is None:
            break
        try:
            with servers.llama_server(binary, model, args.threads, max(STREAMS), model=MODEL,
                                      extra=("-fa", "on", *SAME_WEIGHTS, *extra)) as peer:
                rates = best_rates(peer, args.tokens, args.repeats)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            report.add(f"host-bound: {name}", "skipped", str(exc)[:80])
            continue
        results[name] = rates
        for streams in STREAMS:
            share = f"{rates[streams] / limit[streams]:.2f} of the limit" if limit else ""
            report.add(f"host-bound: {name}, {streams} requests, tok/s", f"{rates[streams]:.0f}",
                       f"{share}; ours is {ours[streams] / rates[streams]:.2f}× this")
    return results
