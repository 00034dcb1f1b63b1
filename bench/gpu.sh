#!/usr/bin/env bash
# The GPU measurement, in one go, on a lent machine without network access. Beforehand, here:
#   bash ../shared/gpu/bundle.sh .gpu        (the offline bundle, ~35 MB; .gpu stays out of git)
# There, from this checkout:   bash bench/gpu.sh
# Builds llama.cpp with CUDA (../shared/gpu/build.sh, plus llama-batched-bench for the decode-only limit),
# writes random-weight Qwen3-8B and Qwen3-0.6B shapes (Q4_0, Qwen3's real vocabulary), and runs the
# host-bound bench on each: ours, llama-server with and without --backend-sampling, and the limit, at
# 1/4/16/64 streams, 256 tokens each; then the 8B shape's cold start (process start → first token, every
# layer offloaded: raw llama-cpp-python, the bare framework, `python -m handler serve`).
# Figures: bench/results/gpu-*.json and gpu-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .gpu/build.sh
cmake --build /tmp/b --target llama-batched-bench -j "$(nproc)" >/tmp/build-batched-bench.log
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/b/bin LLAMA_SERVER=/tmp/b/bin/llama-server
out=bench/results
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-summary.txt"
# One shape failing (a server that does not come up says why, with its last output) does not cost the other.
for shape in qwen3-8b qwen3-0.6b; do
  if ! (PYTHONPATH=/tmp/src/llama.cpp/gguf-py python3 .gpu/make_model.py /tmp/tok "/tmp/models/$shape.gguf" "$shape" q4_0 \
        && timeout 1800 python3 -m bench.host_bound --gpu --model "/tmp/models/$shape.gguf" --threads 8 --tokens 256 \
          --repeats 3 --out "$out/gpu-$shape.json") 2>&1 | tee -a "$out/gpu-summary.txt"; then
    echo "$shape: failed (above)" | tee -a "$out/gpu-summary.txt"
  fi
done
if [ -f /tmp/models/qwen3-8b.gguf ]; then
  timeout 1200 python3 -m bench.cold_start --model /tmp/models/qwen3-8b.gguf --gpu-layers -1 --threads 8 --repeats 3 \
    --out "$out/gpu-cold-start.json" 2>&1 | tee -a "$out/gpu-summary.txt" \
    || echo "cold start: failed (above)" | tee -a "$out/gpu-summary.txt"
fi
