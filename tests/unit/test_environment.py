"""The project environment itself: no file in it may belong to two installed distributions.

Two distributions that write the same path (python-hcl2 and checkov's bc-python-hcl2 both ship
`hcl2/`) leave whichever uv installed last, and uv installs in parallel: a fresh `.venv` then passes
or fails by luck. The RECORD files say who wrote what.
"""

from __future__ import annotations

import collections
import sysconfig
from importlib import metadata
from pathlib import Path


def shared_files(site_dirs: list[str]) -> dict[str, set[str]]:
    """Paths (relative to site-packages) that more than one distribution's RECORD lists."""
    owners: dict[str, set[str]] = collections.defaultdict(set)
    for dist in metadata.distributions(path=site_dirs):
        for file in dist.files or ():
            path = file.as_posix()
            if path.startswith("..") or ".dist-info/" in path or "__pycache__" in path:
                continue  # scripts outside site-packages, each distribution's own metadata, bytecode
            owners[path].add(dist.metadata["Name"])
    return {path: names for path, names in owners.items() if len(names) > 1}


def test_no_file_is_written_by_two_distributions():
    site_dirs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    clashes = shared_files(site_dirs)
    assert clashes == {}, "\n".join(f"{path}: {' and '.join(sorted(names))}" for path, names in sorted(clashes.items()))


def _fake_distribution(site: Path, name: str, files: list[str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in [*files, f"{info.name}/RECORD"]))


def test_a_clash_names_both_distributions(tmp_path):
    _fake_distribution(tmp_path, "first", ["hcl2/__init__.py", "first/x.py", "../../bin/tool"])
    _fake_distribution(tmp_path, "second", ["hcl2/__init__.py", "second/y.py", "../../bin/tool"])
    assert shared_files([str(tmp_path)]) == {"hcl2/__init__.py": {"first", "second"}}
