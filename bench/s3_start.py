"""S3 → first token from a new process, the model only in S3 (moto on loopback): boto3's
`download_file` to a local disk then raw llama-cpp-python, against our server staging the file on
the volume (MODEL_STAGING=volume) and in memory (MODEL_STAGING=memory), each a fresh process with an
empty volume and the model as its warm set. Interleaved runs; medians."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import boto3

from bench import workloads
from bench.common import CREDENTIALS, free_port, moto_s3

RAW = """
import sys, time, boto3, llama_cpp
started = float(sys.argv[1])
boto3.client("s3").download_file("models", "demo.gguf", sys.argv[2])
llama = llama_cpp.Llama(sys.argv[2], n_ctx=2048, n_threads=int(sys.argv[3]), flash_attn=True, verbose=False)
tokens = llama.tokenize(b"<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", special=True)
next(llama.generate(tokens, temp=0))
print(time.time() - started)
"""


def _raw(scratch: Path, env: dict[str, str], threads: int) -> float:
    target = scratch / f"raw-{time.monotonic_ns()}.gguf"
    output = subprocess.run([sys.executable, "-c", RAW, str(time.time()), str(target), str(threads)], env=env,
                            capture_output=True, text=True, timeout=300, check=True).stdout
    target.unlink(missing_ok=True)
    return float(output.split()[0])


def _ours(scratch: Path, env: dict[str, str], staging: str, manifest: Path, threads: int) -> float:
    volume = Path(tempfile.mkdtemp(dir=scratch))
    port = free_port()
    environment = {**env, "MODEL_DIR": str(volume), "MODELS_MANIFEST": str(manifest), "MODEL_STAGING": staging,
                   "WARM_MODELS": "remote", "N_THREADS": str(threads), "KV_CACHE_MB": "0"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                                "--port", str(port), "--factory", "handler.serve:build"], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return workloads.first_token_since(f"http://127.0.0.1:{port}", "remote", started)
    finally:
        process.terminate()
        process.wait(30)


def s3_to_first_token(model: Path, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds from process start to first token for each way of getting the model out of S3."""
    with moto_s3() as endpoint, tempfile.TemporaryDirectory() as scratch_dir:
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}
        client = boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket="models")
        client.upload_file(str(model), "models", "demo.gguf")
        scratch = Path(scratch_dir)
        manifest = scratch / "manifest.toml"
        sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
        manifest.write_text(f'[[models]]\nname = "remote"\nsource = "s3://models/demo.gguf"\nsha256 = "{sha256}"\n')
        runs: dict[str, list[float]] = {"download_file + raw load": [], "ours, volume": [], "ours, memory": []}
        for _ in range(repeats):
            runs["download_file + raw load"].append(_raw(scratch, env, threads))
            runs["ours, volume"].append(_ours(scratch, env, "volume", manifest, threads))
            runs["ours, memory"].append(_ours(scratch, env, "memory", manifest, threads))
    return {name: median(values) for name, values in runs.items()}
