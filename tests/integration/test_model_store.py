"""ModelStore against moto's S3 in server mode: real boto3 calls, real files, no app."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from handler.errors import InsufficientStorage, ModelSourceError, ServiceUnavailable
from handler.store.catalog import ModelCatalog, local_path
from handler.store.files import RecordBook, exclusive_lock
from handler.store.manifest import ModelSpec
from handler.store.model_store import ModelStore, StoreConfig
from handler.store.progress import SyncProgress
from handler.store.s3 import S3Tuning
from tests.integration.conftest import free_port
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

PAYLOAD = os.urandom(12 * 1024 * 1024 + 123)  # three 5 MB parts
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def s3():
    server = S3Server(free_port()).start()
    server.upload("models", "dir/tiny.gguf", PAYLOAD)
    yield server
    server.kill()


@pytest.fixture(autouse=True)
def aws_environment(s3, monkeypatch):
    for name, value in s3.app_env().items():
        monkeypatch.setenv(name, value)


def _store(tmp_path, *specs, **config):
    tuning = S3Tuning(part_size_mb=5, concurrency=4, max_attempts=2)
    return ModelStore(ModelCatalog(tmp_path, specs), StoreConfig(tuning=tuning, **config))


def _spec(key="dir/tiny.gguf", **fields):
    return ModelSpec(name="tiny", kind="chat", source=f"s3://models/{key}", **fields)


def _ensure(store, spec):
    return asyncio.run(store.ensure_local(spec))


def _leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


def test_cold_sync_verifies_and_records(tmp_path, s3):
    before = s3.stats("models", "dir/tiny.gguf")["downloads"]
    store = _store(tmp_path, _spec(sha256=SHA))
    path = _ensure(store, _spec(sha256=SHA))
    assert path == local_path(tmp_path, _spec()) and path.read_bytes() == PAYLOAD
    assert path.name.startswith("tiny.") and path.suffix == ".gguf"
    assert RecordBook().read(path).sha256 == SHA  # on disk, for the next process
    progress = store.progress[path.name]
    assert progress.state == "ready" and progress.bytes_done == len(PAYLOAD)
    assert s3.stats("models", "dir/tiny.gguf")["downloads"] == before + 1
    assert _leftovers(tmp_path) == []


def test_a_verified_copy_needs_no_s3_call(tmp_path, s3):
    _ensure(_store(tmp_path), _spec(sha256=SHA))
    before = s3.stats("models", "dir/tiny.gguf")
    _ensure(_store(tmp_path), _spec(sha256=SHA))  # a new process: only the volume is shared
    assert s3.stats("models", "dir/tiny.gguf") == before


def test_without_sha256_one_head_checks_the_etag(tmp_path, s3):
    _ensure(_store(tmp_path), _spec())
    before = s3.stats("models", "dir/tiny.gguf")
    _ensure(_store(tmp_path), _spec())
    after = s3.stats("models", "dir/tiny.gguf")
    assert (after["heads"] - before["heads"], after["gets"] - before["gets"]) == (1, 0)
    _ensure(_store(tmp_path, trust_local=True), _spec())
    assert s3.stats("models", "dir/tiny.gguf") == after


def test_a_changed_object_is_synced_again(tmp_path, s3):
    s3.upload("models", "dir/changing.gguf", b"first version")
    spec = _spec("dir/changing.gguf")
    _ensure(_store(tmp_path), spec)
    s3.upload("models", "dir/changing.gguf", b"second version!")
    assert _ensure(_store(tmp_path), spec).read_bytes() == b"second version!"


def test_concurrent_requests_share_one_download(tmp_path, s3):
    s3.upload("models", "dir/shared.gguf", PAYLOAD)
    store, spec = _store(tmp_path), _spec("dir/shared.gguf")

    async def many():
        return await asyncio.gather(*(store.ensure_local(spec) for _ in range(8)))

    assert len(set(asyncio.run(many()))) == 1
    assert s3.stats("models", "dir/shared.gguf")["downloads"] == 1


def test_a_prefetch_is_the_sync_the_first_request_joins(tmp_path, s3):
    """The process's start syncs its warm model before the event loop runs (`prefetch`); the requests
    that then ask for it wait for that download instead of starting another (staged in memory: no file
    lock on the volume would have made a second sync find the first one's file)."""
    s3.upload("models", "dir/prefetched.gguf", PAYLOAD)
    store, spec = _store(tmp_path, staging="memory"), _spec("dir/prefetched.gguf", sha256=SHA)
    prefetched = store.prefetch(spec)

    async def requests():
        return await asyncio.gather(*(store.ensure_local(spec) for _ in range(4)))

    paths = asyncio.run(requests())
    assert set(paths) == {prefetched.result()} and paths[0].read_bytes() == PAYLOAD
    assert s3.stats("models", "dir/prefetched.gguf")["downloads"] == 1
    store.close()


def test_a_failed_prefetch_fails_its_first_request_and_the_next_one_tries_again(tmp_path, s3):
    store, spec = _store(tmp_path), _spec("dir/arrives-later.gguf")
    prefetched = store.prefetch(spec)
    with pytest.raises(ModelSourceError, match="does not exist"):
        _ensure(store, spec)
    assert isinstance(prefetched.exception(), ModelSourceError)
    s3.upload("models", "dir/arrives-later.gguf", b"GGUF now")
    assert _ensure(store, spec).read_bytes() == b"GGUF now"


@pytest.mark.parametrize("staging", ["volume", "memory"])
def test_closing_the_store_stops_a_download_under_way(tmp_path, s3, monkeypatch, staging):
    """A server stopping mid-download (an instance scaled in while it syncs a large model) does not wait
    for the rest: the transfer ends at its next bytes, its sync fails as the drain's 503, and no file or
    partial file is left (the process exits only once the store's threads have)."""
    s3.upload("models", "dir/stopped.gguf", PAYLOAD)
    arrived, release = threading.Event(), threading.Event()
    add_bytes = SyncProgress.add_bytes

    def held_add_bytes(progress, count):
        arrived.set()
        release.wait(60)
        add_bytes(progress, count)

    monkeypatch.setattr(SyncProgress, "add_bytes", held_add_bytes)
    store, spec = _store(tmp_path, staging=staging), _spec("dir/stopped.gguf", sha256=SHA)
    sync = store.prefetch(spec)
    assert arrived.wait(60)  # the first bytes are in
    store.close()
    release.set()
    error = sync.exception(timeout=60)
    assert isinstance(error, ServiceUnavailable) and error.code == "draining"
    assert not local_path(tmp_path, spec).exists() and _leftovers(tmp_path) == []
    assert store.progress[local_path(tmp_path, spec).name].state == "failed"


def test_wrong_sha256_keeps_nothing(tmp_path):
    with pytest.raises(ModelSourceError) as raised:
        _ensure(_store(tmp_path), _spec(sha256="0" * 64))
    assert raised.value.code == "checksum_mismatch" and raised.value.status_code == 502
    assert list(tmp_path.glob("*.gguf")) == [] and _leftovers(tmp_path) == []


def test_missing_object_names_the_key(tmp_path):
    with pytest.raises(ModelSourceError) as raised:
        _ensure(_store(tmp_path), _spec("dir/absent.gguf"))
    assert raised.value.code == "model_source_missing" and "s3://models/dir/absent.gguf" in raised.value.message


def test_not_enough_disk_space_writes_nothing(tmp_path):
    with pytest.raises(InsufficientStorage) as raised:
        _ensure(_store(tmp_path, headroom_bytes=1 << 60), _spec())
    assert raised.value.status_code == 507 and "tiny" in raised.value.message
    assert list(tmp_path.glob("*.gguf")) == [] and _leftovers(tmp_path) == []


def test_unreachable_s3_is_a_503_with_retry_after(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailable) as raised:
        _ensure(_store(tmp_path), _spec())
    assert raised.value.retry_after_s > 0


def test_wrong_credentials_are_access_denied(tmp_path, monkeypatch):
    guarded = S3Server(free_port())
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # moto checks credentials from the first call
    guarded.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", guarded.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        with pytest.raises(ModelSourceError) as raised:
            _ensure(_store(tmp_path), _spec())
        assert raised.value.code == "model_source_access_denied"
    finally:
        guarded.kill()


def test_leftovers_are_removed_unless_a_download_owns_them(tmp_path):
    store = _store(tmp_path)
    orphan = tmp_path / ".tiny.gguf.123.abcd.part"
    owned = tmp_path / ".busy.gguf.456.ef01.part"
    orphan.write_bytes(b"half")
    owned.write_bytes(b"half")
    with exclusive_lock(tmp_path / "busy.gguf"):
        store.clean_leftovers()
    assert not orphan.exists() and owned.exists()


def _state_reached(store, spec, state):
    """Whether the sync of `spec` reaches `state` within a minute."""
    def reached():
        progress = store.progress.get(local_path(store.catalog.model_dir, spec).name)
        return progress is not None and progress.state == state

    return wait_for(reached, timeout=60, interval=0.01)


def test_closing_the_store_stops_a_sync_waiting_for_another_process(tmp_path, s3):
    """A sync that waits while another process (a second worker, `python -m handler pull`, an instance
    sharing the volume) downloads the same file ends when the server stops, as a download under way
    does: before, it sat in a blocking flock until the other download ended, and held the stopping
    process with it."""
    store, spec = _store(tmp_path), _spec(sha256=SHA)
    with exclusive_lock(local_path(tmp_path, spec)):  # the other process's download
        sync = store.prefetch(spec)
        assert _state_reached(store, spec, "waiting")
        store.close()
        error = sync.exception(timeout=60)
    assert isinstance(error, ServiceUnavailable) and error.code == "draining"
    assert not local_path(tmp_path, spec).exists() and _leftovers(tmp_path) == []
    assert store.progress[local_path(tmp_path, spec).name].state == "failed"


def test_a_sync_that_waited_for_another_process_uses_its_file(tmp_path, s3):
    before = s3.stats("models", "dir/tiny.gguf")["downloads"]
    store, spec = _store(tmp_path, _spec(sha256=SHA)), _spec(sha256=SHA)
    try:
        with exclusive_lock(local_path(tmp_path, spec)):
            sync = store.prefetch(spec)
            assert _state_reached(store, spec, "waiting")
            local_path(tmp_path, spec).write_bytes(PAYLOAD)  # what the other process published
        assert sync.result(timeout=60) == local_path(tmp_path, spec)
        assert s3.stats("models", "dir/tiny.gguf")["downloads"] == before  # nothing fetched again
    finally:
        store.close()


def test_a_sync_gives_up_on_another_process_that_never_finishes(tmp_path, s3, monkeypatch):
    monkeypatch.setattr("handler.store.model_store.LOCK_WAIT_S", 0.3)
    store, spec = _store(tmp_path), _spec(sha256=SHA)
    try:
        with exclusive_lock(local_path(tmp_path, spec)):
            error = store.prefetch(spec).exception(timeout=60)
        assert isinstance(error, ServiceUnavailable) and error.code == "model_source_unavailable"
        assert error.retry_after_s and "another process" in error.message
    finally:
        store.close()
