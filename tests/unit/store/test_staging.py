"""Files staged in memory: readable by path while kept, gone once released."""

from __future__ import annotations

import os

import pytest

from handler.store.staging import MemoryStaging, StagedFile, available_memory_bytes, is_staged


def test_a_staged_file_reads_back_by_its_path_until_released():
    staging = MemoryStaging()
    fd = staging.new_file("m")
    os.write(fd, b"GGUF" + bytes(12))
    staged = StagedFile(fd, "sha", 16)
    staging.keep("m", staged)
    assert is_staged(staged.path) and staged.path.read_bytes()[:4] == b"GGUF"
    assert staging.get("m") == staged
    assert staging.release("m") and staging.get("m") is None and not staging.release("m")
    with pytest.raises(OSError):
        os.fstat(fd)


def test_keeping_again_replaces_and_closes_the_previous_file():
    staging = MemoryStaging()
    first, second = staging.new_file("m"), staging.new_file("m")
    staging.keep("m", StagedFile(first, "a", 0))
    staging.keep("m", StagedFile(second, "b", 0))
    with pytest.raises(OSError):
        os.fstat(first)
    staging.release_all()
    with pytest.raises(OSError):
        os.fstat(second)


def test_available_memory_is_known():
    assert available_memory_bytes() > 0
