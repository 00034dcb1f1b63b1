"""The GPU recipe (bench/gpu.sh) runs `python -m bench.host_bound` and `python -m bench.cold_start` on a
machine without network access, with only the serving dependencies the offline bundle carries
(../shared/gpu/bundle.sh): the modules they import must need nothing from the dev or bench groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Top-level modules of the dev and bench groups (not in the offline bundle).
NOT_IN_THE_BUNDLE = ("gguf", "openai", "anthropic", "pytest", "hypothesis", "tokenizers", "moto", "playwright",
                     "schemathesis", "kubernetes_validate", "hcl2", "fastapi", "uvicorn", "sse_starlette",
                     "starlette_context", "pydantic_settings")


def test_the_gpu_bench_imports_with_the_serving_dependencies_only():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_IN_THE_BUNDLE)
    result = subprocess.run([sys.executable, "-c", f"import sys; {blocked}; import bench.host_bound, bench.cold_start, bench.run"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
