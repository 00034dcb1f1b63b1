"""Model files staged in memory instead of on the volume (`MODEL_STAGING=memory`): for a volume that is
slow or absent (Lambda's /tmp, a network disk), an object is streamed from S3 with parallel ranged
GETs into an anonymous in-memory file (memfd) and loaded from there, then released.

Measured on this machine (moto on loopback, the 98 MB demo model): see README, "Weights straight from
S3". The rule: stage on the volume when it is a local disk that outlives the process (the next start
skips the download); stage in memory when it does not, or is slower than the network.

The staged file is opened by llama.cpp through `/proc/self/fd/N`. With the weights memory-mapped (CPU)
the mapping keeps its pages once the file is released: no copy. With layers on a GPU the model is
loaded without mmap, so the host copy is freed once the weights are on the device."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import attrs

FD_DIR = Path("/proc/self/fd")


class StagingUnavailable(OSError):
    """This system has no anonymous in-memory files (memfd): stage on the volume instead."""


@attrs.frozen
class StagedFile:
    fd: int
    sha256: str
    size: int

    @property
    def path(self) -> Path:
        return FD_DIR / str(self.fd)


def is_staged(path: Path) -> bool:
    """Whether `path` is a file staged in memory (its model is loaded without a volume copy)."""
    return path.parent == FD_DIR


def available_memory_bytes() -> int:
    """Memory the system could give a new staged file now (MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class MemoryStaging:
    """The files staged now, by model name: each kept until its model has loaded, then released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._staged: dict[str, StagedFile] = {}

    def get(self, name: str) -> StagedFile | None:
        with self._lock:
            return self._staged.get(name)

    @staticmethod
    def new_file(name: str) -> int:
        if not hasattr(os, "memfd_create"):
            raise StagingUnavailable("MODEL_STAGING=memory needs memfd_create (Linux)")
        return os.memfd_create(f"model-{name}", os.MFD_CLOEXEC)

    def keep(self, name: str, staged: StagedFile) -> None:
        with self._lock:
            previous, self._staged[name] = self._staged.get(name), staged
        if previous is not None:
            os.close(previous.fd)

    def release(self, name: str) -> bool:
        with self._lock:
            staged = self._staged.pop(name, None)
        if staged is None:
            return False
        os.close(staged.fd)
        return True

    def release_all(self) -> None:
        with self._lock:
            staged, self._staged = list(self._staged.values()), {}
        for entry in staged:
            os.close(entry.fd)
