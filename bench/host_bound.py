"""The host-bound decode, what a GPU exposes: a tiny model with Qwen3's 151,936-token vocabulary, whose
decode step is cheap next to each sequence's per-token host work (reading and sampling a full
vocabulary row, the Python around it). Greedy, non-streamed, usage-counted completions, 1, 4, 16 and
64 at a time, against llama.cpp's decode-only limit (`llama-batched-bench` from the same sources: no
sampling at all) and llama-server (with and without `--backend-sampling`); then, ours and llama-server
only, 16 seeded temperature-sampled requests, and 16 greedy ones after conversations have used every
slot (`rate_after_conversations`). Best of `repeats`
interleaved rounds: every server stays up (an idle one takes no CPU) and each round measures every
side once, so a slow minute of this shared machine falls on all of them alike."""

from __future__ import annotations

import http.client
import json
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench import servers

MODEL = "tiny-qwen3-vocabulary"
STREAMS = (1, 4, 16, 64)
PEERS = (("llama-server", ()), ("llama-server --backend-sampling", ("--backend-sampling",)))
# Enough connections for the most streams at once (the shared client keeps fewer).
CLIENT = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=2 * max(STREAMS),
                                                       max_keepalive_connections=2 * max(STREAMS)))
PROMPT_TOKENS = 128
# Seeded temperature sampling (top-k 40, min-p 0.05: a sampler chain per sequence on the host) at 16
# requests, ours against llama-server's default.
SAMPLED_STREAMS, SAMPLED_TEMPERATURE = 16, 0.7
PAIRED_SIDES = ("ours", "llama-server")  # the seeded and after-conversations workloads run on these only
# Our engine does not repack weights for the CPU (a repacked matmul computes a row differently with the
# batch's size, so replies would depend on what else decodes; `repack = true` in the manifest turns it
# on): every side here runs the same layout, so the comparison is of everything but the matmuls.
SAME_WEIGHTS = ("--no-repack",)
_STEP_METRICS = re.compile(r'^gguf_step(_host)?_seconds_(sum|count)\{model="[^"]+"\} (\S+)$', re.M)


def decode_limit(binary: str, model: Path, threads: int, tokens: int, placement: tuple[str, ...] = ()
                 ) -> dict[str, dict[int, float]]:
    """Per number of parallel sequences, as `llama-batched-bench` measures it: "limit", decode tok/s
    (S_TG, no prefill), and "limit with prefill", generated tokens over the prompts' and the decode's
    time together (B × TG / T: the same work a request does, still without sampling)."""
    context = max(STREAMS) * (PROMPT_TOKENS + tokens + 16)
    command = [binary, "-m", str(model), "-c", str(context), "-b", "2048", "-ub", "512", "-t", str(threads),
               "-fa", "on", *SAME_WEIGHTS, "-npp", str(PROMPT_TOKENS), "-ntg", str(tokens),
               "-npl", ",".join(map(str, STREAMS)), *placement]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    rates: dict[str, dict[int, float]] = {"limit": {}, "limit with prefill": {}}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].isdigit() and cells[2].isdigit():  # PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG | T | S
            streams = int(cells[2])
            rates["limit"][streams] = float(cells[7])
            rates["limit with prefill"][streams] = streams * int(cells[1]) / float(cells[8])
    return rates


def _request(model: str, prompt: list[int], tokens: int, sampled: dict[str, float]) -> dict[str, object]:
    """A non-streamed completion of the token `prompt`, as every request of this bench asks for it."""
    return {"model": model, "prompt": prompt, "max_tokens": tokens, "stream": False, **sampled}


def _completion_body(model: str, tokens: int, seed: int, temperature: float = 0) -> bytes:
    rng = random.Random(seed)  # a prompt of its own: nothing is reused from another request
    prompt = [rng.randrange(1000, 100_000) for _ in range(PROMPT_TOKENS)]
    sampled = {"temperature": temperature, "seed": seed, "top_k": 40, "top_p": 1.0, "min_p": 0.05} if temperature else {
        "temperature": 0}
    return json.dumps(_request(model, prompt, tokens, sampled)).encode()


def _complete(base_url: str, model: str, prompt: list[int], tokens: int, sampled: dict[str, float]) -> int:
    """One non-streamed completion of the token `prompt`; the tokens it generated."""
    response = CLIENT.post(f"{base_url}/v1/completions", json=_request(model, prompt, tokens, sampled))
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


_seeds = iter(range(10**9))
# Chat traffic's slots: CONVERSATIONS conversations take every slot, CONTINUED of them go on (each back in
# the slot holding it, in a random order), then AFTER_CONVERSATIONS new requests arrive together. Which
# free slots they take decides into how many computes llama.cpp splits every step (README "Which slot").
CONVERSATIONS, CONTINUED, AFTER_CONVERSATIONS = 64, 40, 16


def rate_after_conversations(base_url: str, model: str, tokens: int) -> float:
    """`completions_rate` of AFTER_CONVERSATIONS new requests once conversations have used the slots."""
    rng = random.Random(next(_seeds))
    conversations = [[rng.randrange(1000, 100_000) for _ in range(64)] for _ in range(CONVERSATIONS)]
    with ThreadPoolExecutor(CONVERSATIONS) as pool:
        list(pool.map(lambda prompt: _complete(base_url, model, prompt, 2, {"temperature": 0}), conversations))
    for prompt in rng.sample(conversations, CONTINUED):
        _complete(base_url, model, prompt + [rng.randrange(1000, 100_000) for _ in range(4)], 2, {"temperature": 0})
    return completions_rate(base_url, model, AFTER_CONVERSATIONS, tokens)


def completions_rate(base_url: str, model: str, streams: int, tokens: int, temperature: float = 0) -> float:
    """Generated tok/s of `streams` completions sent at once (greedy unless `temperature`), over the
    wall time. The client shares the server's cores, so it does next to nothing while the clock runs:
    every body is encoded and every connection open before; then the requests go out back to back and
    the replies are read in order (each waits in its socket until then). A thread per request, as an
    SDK's client would need, spread 16 requests' arrival over tens of milliseconds of the run."""
    bodies = [_completion_body(model, tokens, next(_seeds), temperature) for _ in range(streams)]
    address = httpx.URL(base_url)
    connections = [http.client.HTTPConnection(address.host, address.port, timeout=300) for _ in range(streams)]
    try:
        for connection in connections:
            connection.connect()
        started = time.perf_counter()
        for connection, body in zip(connections, bodies, strict=True):
            connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        produced = sum(_generated(connection) for connection in connections)
        return produced / (time.perf_counter() - started)
    finally:
        for connection in connections:
            connection.close()


def _generated(connection: http.client.HTTPConnection) -> int:
    """The tokens generated by the reply waiting on `connection`."""
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {body[:200]!r}")
    return int(json.loads(body)["usage"]["completion_tokens"])


def _step_totals(base_url: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for host, field, number in _STEP_METRICS.findall(CLIENT.get(f"{base_url}/metrics").text):
        key = ("host_" if host else "") + field
        totals[key] = totals.get(key, 0.0) + float(number)
    return totals


def ours(model: Path, threads: int, work: Path) -> ContextManager[servers.Server]:
    manifest = work / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "{MODEL}"\nkind = "chat"\nsource = "{model.name}"\n')
    env = {"MODELS_MANIFEST": str(manifest), "N_CTX": "512", "MAX_QUEUE": str(2 * max(STREAMS))}
    return servers.ours(model.parent, threads, max(STREAMS), env=env, model=MODEL)


def steps_at(server: servers.Server, streams: int, tokens: int) -> dict[str, float]:
    """The mean step's total and host milliseconds over one run of `streams` requests (from /metrics)."""
    before = _step_totals(server.base_url)
    completions_rate(server.base_url, server.model, streams, tokens)
    after = _step_totals(server.base_url)
    steps = after.get("count", 0) - before.get("count", 0)
    return {"total_ms": 1000 * (after.get("sum", 0) - before.get("sum", 0)) / max(steps, 1),
            "host_ms": 1000 * (after.get("host_sum", 0) - before.get("host_sum", 0)) / max(steps, 1)}


def _peers(stack: ExitStack, report, model: Path, threads: int, placement: tuple[str, ...] = ()
           ) -> dict[str, servers.Server]:
    binary = servers.llama_server_binary()
    started: dict[str, servers.Server] = {}
    for name, extra in PEERS:
        if binary is None:
            report.add(f"host-bound: {name}", "skipped", "no llama-server (just build-llama-server)")
            continue
        try:
            started[name] = stack.enter_context(servers.llama_server(
                binary, model, threads, max(STREAMS), model=MODEL, extra=("-fa", "on", *SAME_WEIGHTS, *placement, *extra)))
        except (RuntimeError, subprocess.SubprocessError) as exc:
            report.add(f"host-bound: {name}", "skipped", str(exc)[:80])
    return started


def interleaved(sides: dict[str, servers.Server], limit_of: Callable[[], dict[str, dict[int, float]]] | None,
                tokens: int, repeats: int) -> dict[str, dict[int, float]]:
    """Best of `repeats` rounds for every side and stream count; each round measures every side once, so
    a slow minute of this shared machine falls on all of them alike."""
    best: dict[str, dict[int, float]] = {name: dict.fromkeys(STREAMS, 0.0) for name in sides}
    sampled = {f"{name}, sampled": {SAMPLED_STREAMS: 0.0} for name in sides if name in PAIRED_SIDES}
    after = {f"{name}, after conversations": {AFTER_CONVERSATIONS: 0.0} for name in sides if name in PAIRED_SIDES}
    for side in sides.values():
        completions_rate(side.base_url, side.model, 2, 8)  # warm up
    for _ in range(repeats):
        if limit_of is not None:
            for name, rates in limit_of().items():
                row = best.setdefault(name, {})
                for streams, rate in rates.items():
                    row[streams] = max(row.get(streams, 0.0), rate)
        for name, side in sides.items():
            for streams in STREAMS:
                best[name][streams] = max(best[name][streams],
                                          completions_rate(side.base_url, side.model, streams, tokens))
            if name in PAIRED_SIDES:
                row = sampled[f"{name}, sampled"]
                row[SAMPLED_STREAMS] = max(row[SAMPLED_STREAMS], completions_rate(
                    side.base_url, side.model, SAMPLED_STREAMS, tokens, SAMPLED_TEMPERATURE))
                row = after[f"{name}, after conversations"]
                row[AFTER_CONVERSATIONS] = max(row[AFTER_CONVERSATIONS],
                                               rate_after_conversations(side.base_url, side.model, tokens))
    return {**best, **sampled, **after}


def measure(report, args, cache: Path) -> dict[str, object]:
    # Here, not at import: writing the model needs gguf (a bench dependency), which the GPU machine's
    # offline bundle does not carry; `main` there measures a model made by ../shared/gpu/make_model.py.
    from bench.tiny_model import write_tiny_model

    try:
        model = write_tiny_model(cache / "tiny-qwen3-vocabulary.gguf", cache)
    except (OSError, subprocess.SubprocessError) as exc:  # no npm, or no registry: say so, measure the rest
        report.add("host-bound decode", "skipped", f"could not make the tiny model: {exc}"[:100])
        return {}
    return measure_model(report, model, args.threads, args.tokens, args.repeats)


def measure_model(report, model: Path, threads: int, tokens: int, repeats: int,
                  placement: tuple[str, ...] = ()) -> dict[str, object]:
    """Every side on `model`; `placement`: llama.cpp's flags for where the layers go (ours places them
    by itself: all on the GPU when there is one)."""
    batched_bench = servers.llama_tool("llama-batched-bench")
    if batched_bench is None:
        report.add("decode-only limit", "skipped", "no llama-batched-bench (just build-llama-server)")
    limit_of = None if batched_bench is None else (lambda: decode_limit(batched_bench, model, threads, tokens,
                                                                         placement))
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        sides = {"ours": stack.enter_context(ours(model, threads, Path(work)))}
        sides.update(_peers(stack, report, model, threads, placement))
        results: dict[str, object] = dict(interleaved(sides, limit_of, tokens, repeats))
        results["ours_steps_at_16"] = steps = steps_at(sides["ours"], 16, tokens)
    _report(report, results)
    report.add("host-bound: ours at 16, mean step ms (host part)", f"{steps['total_ms']:.2f} ({steps['host_ms']:.2f})")
    return results


def _report(report, results: dict[str, object]) -> None:
    limit, with_prefill = results.get("limit", {}), results.get("limit with prefill", {})
    ours_rates = results["ours"]
    for name, rates in results.items():
        if name in ("limit", "limit with prefill", "ours_steps_at_16") or not isinstance(rates, dict):
            continue
        sampled = name.endswith(", sampled")
        after = name.endswith(", after conversations")
        if after:
            _report_after(report, name, rates, results)
            continue
        for streams in rates:
            notes = []
            if limit and not sampled:
                notes.append(f"{rates[streams] / limit[streams]:.2f} of the limit ({limit[streams]:.0f}), "
                             f"{rates[streams] / with_prefill[streams]:.2f} of it with prefill "
                             f"({with_prefill[streams]:.0f})")
            if sampled and name != "ours, sampled" and "ours, sampled" in results:
                notes.append(f"ours is {results['ours, sampled'][streams] / rates[streams]:.2f}× this")
            elif not sampled and name != "ours":
                notes.append(f"ours is {ours_rates[streams] / rates[streams]:.2f}× this")
            kind = "seeded temperature-sampled" if sampled else "greedy"
            report.add(f"host-bound: {name.removesuffix(', sampled')}, {streams} {kind} requests, tok/s",
                       f"{rates[streams]:.0f}", "; ".join(notes))


def _report_after(report, name: str, rates: dict[int, float], results: dict[str, object]) -> None:
    ours = results.get("ours, after conversations", {})
    side = name.removesuffix(", after conversations")
    for streams, rate in rates.items():
        note = "" if side == "ours" else f"ours is {ours[streams] / rate:.2f}× this"  # type: ignore[index]
        report.add(f"host-bound: {side}, {streams} greedy requests after {CONVERSATIONS} conversations "
                   f"({CONTINUED} went on), tok/s", f"{rate:.0f}", note)


def main() -> None:
    """`python -m bench.host_bound --model M [--gpu]`: the same sides on a model of your choice (the GPU
    recipe, bench/gpu.sh, runs it on random-weight models of real shapes), figures to `--out`."""
    import argparse
    import json

    from bench.run import Report

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--gpu", action="store_true", help="every layer on the GPU for llama.cpp's tools")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = measure_model(Report(), args.model.resolve(), args.threads, args.tokens, args.repeats,
                            ("-ngl", "999") if args.gpu else ())
    if args.out is not None:
        args.out.write_text(json.dumps({"model": args.model.name, "tokens": args.tokens, **results}, indent=2,
                                       default=str))


if __name__ == "__main__":
    main()
