"""Cold starts, process start → first token, in interleaved rounds: raw llama-cpp-python, the bare
framework, and ours as the image runs it (`python -m handler serve`, the model as the warm set).

`just bench` measures the demo model and, where the load is the long part, Qwen3-4B's shape on the CPU;
`bench/gpu.sh` runs this module on a GPU with Qwen3-8B's shape, every layer offloaded on both sides:

    python -m bench.cold_start --model M.gguf --gpu-layers -1 --repeats 3 --out F.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import side_by_side, workloads
from bench.common import free_port
from bench.servers import REPO

GOAL_MARGIN_S = 0.150  # issue 28: ours ≤ max(raw, framework) + 150 ms


def ours(threads: int, *, model: str, model_dir: Path, entry: str | None = None,
         env: dict[str, str] | None = None) -> tuple[float, float]:
    """(process start → /health answers, process start → first token) for `python -m handler serve`, or
    granian serving the factory `entry`, with `model` (on the volume `model_dir`) as the warm set."""
    port = free_port()
    started = time.perf_counter()
    # The model is the warm set, as a deployed function's is: its weights are read while the app starts.
    env = {"MODEL_DIR": str(model_dir), "N_THREADS": str(threads), "KV_CACHE_MB": "0", "WARM_MODELS": model,
           "HOST": "127.0.0.1", "PORT": str(port), **(env or {})}
    command = ([sys.executable, "-m", "handler", "serve"] if entry is None else
               [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--factory", entry])
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url, health = f"http://127.0.0.1:{port}", []
    try:
        first = workloads.first_token_since(base_url, model, started, on_health=health.append, timeout_s=300)
        return health[0], first
    finally:
        process.terminate()
        process.wait(30)


def compare(model: Path, variants: dict[str, str], *, threads: int, repeats: int,
            gpu_layers: int = 0) -> dict[str, float]:
    """Medians, in seconds, of "raw", "framework" and ours once per variant (name → TOML lines for the
    model's `[models.options]`), all with raw's context: one 2,048-token slot."""
    runs: dict[str, list[float]] = {"raw": [], "framework": [], **{name: [] for name in variants}}
    placement = {"N_GPU_LAYERS": str(gpu_layers)} if gpu_layers else {}
    with tempfile.TemporaryDirectory() as work:
        manifests = {}
        for name, options in variants.items():
            manifests[name] = Path(work) / f"{len(manifests)}.toml"
            manifests[name].write_text(f'[[models]]\nname = "big"\nkind = "chat"\nsource = "{model.name}"\n'
                                       f'[models.options]\n{options}')
        for _ in range(repeats):
            runs["raw"].append(workloads.raw_cold_start(model, threads, gpu_layers)[0])
            runs["framework"].append(side_by_side.framework_ready(REPO))
            for name, manifest in manifests.items():
                env = {"MODELS_MANIFEST": str(manifest), "N_PARALLEL": "1", "N_CTX": "2048", **placement}
                runs[name].append(ours(threads, model="big", model_dir=model.parent, env=env)[1])
    return {name: statistics.median(values) for name, values in runs.items()}


def goal(medians: dict[str, float]) -> float:
    return max(medians["raw"], medians["framework"]) + GOAL_MARGIN_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded on every side (-1: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    medians = compare(args.model.resolve(), {"ours": ""}, threads=args.threads, repeats=args.repeats,
                      gpu_layers=args.gpu_layers)
    result = {"model": args.model.name, "gpu_layers": args.gpu_layers, "seconds": medians, "goal": goal(medians)}
    print(f"cold start, {args.model.name}: raw {medians['raw']:.2f} s, bare framework {medians['framework']:.2f} s, "
          f"ours {medians['ours']:.2f} s ({medians['ours'] / medians['raw']:.2f}× raw; goal ≤ {result['goal']:.2f} s)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
