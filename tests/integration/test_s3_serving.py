"""The app with models whose source is S3 (moto in server mode): lazy sync on first request,
one download across worker processes, crash safety, and errors that leave other models serving."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from handler.store.catalog import local_path
from handler.store.files import exclusive_lock
from handler.store.manifest import ModelSpec
from tests.conftest import REPO
from tests.support.waiting import wait_for

ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
KEY = "smol/demo.gguf"
SYNCED = local_path(Path("."), ModelSpec(name="remote", kind="chat", source=f"s3://models/{KEY}")).name


@pytest.fixture(scope="module")
def demo_sha256(demo_model_path):
    return hashlib.sha256(demo_model_path.read_bytes()).hexdigest()


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "volume"
    path.mkdir()
    return path


def _manifest(tmp_path, demo_model_path, *entries):
    lines = [f'[[models]]\nname = "local-demo"\nkind = "chat"\nsource = "{demo_model_path}"\n']
    for name, key, sha in entries:
        lines.append(f'[[models]]\nname = "{name}"\nkind = "chat"\nsource = "s3://models/{key}"\n'
                     + (f'sha256 = "{sha}"\n' if sha else ""))
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(lines))
    return path


def _env(s3, manifest, volume, **extra):
    return {**s3.app_env(), "MODEL_DIR": str(volume), "MODELS_MANIFEST": str(manifest), "S3_PART_SIZE_MB": "8",
            **extra}


def _chat(base_url, model):
    return httpx.post(f"{base_url}/v1/chat/completions", json={"model": model, **ASK}, timeout=120)


def _partial_files(directory):
    return list(directory.glob(".*.part"))


def _download_started(directory, timeout_s=60):
    """Whether a download's partial file appeared in `directory` within `timeout_s`."""
    return wait_for(lambda: _partial_files(directory), timeout=timeout_s, interval=0.05)


def test_cold_request_syncs_then_reuses(tmp_path, volume, demo_model_path, demo_sha256, launch, s3_servers):
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    server = launch(_env(s3, _manifest(tmp_path, demo_model_path, ("remote", KEY, demo_sha256)), volume))
    listed = httpx.get(f"{server.base_url}/v1/models/remote").json()
    assert listed["downloaded"] is False and listed["source"] == f"s3://models/{KEY}"
    cold = _chat(server.base_url, "remote")
    assert cold.status_code == 200 and cold.headers["x-cold-start"].startswith("sync=")
    assert (volume / SYNCED).stat().st_size == demo_model_path.stat().st_size
    seen = s3.stats("models", KEY)
    assert seen["downloads"] == 1
    warm = _chat(server.base_url, "remote")
    assert warm.status_code == 200 and "x-cold-start" not in warm.headers
    assert s3.stats("models", KEY) == seen
    assert httpx.get(f"{server.base_url}/v1/models/remote").json()["downloaded"] is True


def test_eight_cold_requests_on_two_workers_download_once(tmp_path, volume, demo_model_path, demo_sha256, launch,
                                                          s3_servers):
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    server = launch(_env(s3, _manifest(tmp_path, demo_model_path, ("remote", KEY, demo_sha256)), volume), workers=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _chat(server.base_url, "remote").status_code, range(8)))
    assert statuses == [200] * 8
    assert s3.stats("models", KEY)["downloads"] == 1


def test_s3_dying_mid_download_leaves_nothing_and_recovers(tmp_path, volume, demo_model_path, demo_sha256, launch,
                                                           s3_servers):
    s3 = s3_servers(bytes_per_second=20 * 1024 * 1024)
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, demo_sha256))
    server = launch(_env(s3, manifest, volume, S3_MAX_ATTEMPTS="2"))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_chat, server.base_url, "remote")
        assert _download_started(volume, 30), "the download never started"
        s3.kill()
        failed = pending.result()
    assert failed.status_code == 503 and failed.headers.get("retry-after")
    assert failed.json()["error"]["code"] == "model_source_unavailable"
    assert not (volume / SYNCED).exists() and not _partial_files(volume)
    assert _chat(server.base_url, "local-demo").status_code == 200  # other models keep serving
    s3_servers(port=s3.port).upload("models", KEY, demo_model_path)
    assert _chat(server.base_url, "remote").status_code == 200


def test_errors_are_specific_and_other_models_keep_serving(tmp_path, volume, demo_model_path, launch, s3_servers):
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("corrupt", KEY, "0" * 64), ("absent", "smol/absent.gguf", None))
    server = launch(_env(s3, manifest, volume))
    corrupt = _chat(server.base_url, "corrupt")
    assert corrupt.status_code == 502 and corrupt.json()["error"]["code"] == "checksum_mismatch"
    absent = _chat(server.base_url, "absent")
    assert absent.status_code == 502 and "s3://models/smol/absent.gguf" in absent.json()["error"]["message"]
    assert not list(volume.glob("*.gguf")) and not _partial_files(volume)
    assert _chat(server.base_url, "local-demo").status_code == 200


def test_disk_space_refusal(tmp_path, volume, demo_model_path, launch, s3_servers):
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, None))
    server = launch(_env(s3, manifest, volume, DISK_HEADROOM_MB=str(1 << 40)))
    refused = _chat(server.base_url, "remote")
    assert refused.status_code == 507 and "remote" in refused.json()["error"]["message"]
    assert not list(volume.glob("*.gguf"))


def test_pull_streams_progress_then_delete(tmp_path, volume, demo_model_path, launch, s3_servers):
    s3 = s3_servers(bytes_per_second=200 * 1024 * 1024)
    s3.upload("models", KEY, demo_model_path)
    server = launch(_env(s3, _manifest(tmp_path, demo_model_path, ("remote", KEY, None)), volume))
    with httpx.stream("POST", f"{server.base_url}/models/remote/pull?stream=true", timeout=120) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(events) >= 2
    assert '"state":"ready"' in events[-1] and str(demo_model_path.stat().st_size) in events[-1]
    assert (volume / SYNCED).is_file()
    card = httpx.get(f"{server.base_url}/v1/models/remote").json()
    assert card["downloaded"] is True and card["loaded"] is False
    assert httpx.delete(f"{server.base_url}/models/remote/file").json()["deleted"] is True
    assert not (volume / SYNCED).exists()


def test_an_unloadable_synced_file_is_discarded_and_synced_again(tmp_path, volume, demo_model_path, launch,
                                                                  s3_servers):
    s3 = s3_servers()
    s3.upload("models", KEY, b"GGUF but not really a model" * 1000)
    server = launch(_env(s3, _manifest(tmp_path, demo_model_path, ("remote", KEY, None)), volume))
    broken = _chat(server.base_url, "remote")
    assert broken.status_code == 500 and SYNCED in broken.json()["error"]["message"]
    assert not (volume / SYNCED).exists()  # quarantined: the next request syncs again
    s3.upload("models", KEY, demo_model_path)
    assert _chat(server.base_url, "remote").status_code == 200


@pytest.fixture
def small_disk(tmp_path):
    """A 120 MB tmpfs as the model volume (needs root, as CI and this machine have)."""
    mount_point = tmp_path / "small-volume"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_filling_up_mid_download(tmp_path, small_disk, demo_model_path, launch, s3_servers):
    s3 = s3_servers(bytes_per_second=20 * 1024 * 1024)
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, None))
    server = launch(_env(s3, manifest, small_disk, DISK_HEADROOM_MB="0", S3_MAX_ATTEMPTS="1"))
    filler = small_disk / "filler.bin"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_chat, server.base_url, "remote")
        _download_started(small_disk, 30)
        with filler.open("wb") as handle:  # someone else takes the space the download counted on
            handle.write(b"\0" * 60 * 1024 * 1024)
        failed = pending.result()
    assert failed.status_code == 507, failed.text
    assert failed.json()["error"]["code"] == "insufficient_storage"
    assert not (small_disk / SYNCED).exists() and not _partial_files(small_disk)
    assert _chat(server.base_url, "local-demo").status_code == 200
    filler.unlink()
    assert _chat(server.base_url, "remote").status_code == 200


def test_cold_syncs_do_not_stall_models_already_loaded(tmp_path, volume, demo_model_path, launch, s3_servers):
    """Eight slow syncs at once (more than the default thread pool's six threads here) while a loaded
    model is asked: it answers while every sync is still running, since store work has threads of its own."""
    s3 = s3_servers(bytes_per_second=64 * 1024)  # per connection: an 8 MB object takes two minutes
    keys = [f"slow/model-{index}.gguf" for index in range(8)]
    for key in keys:
        s3.upload("models", key, os.urandom(8 * 1024 * 1024))
    manifest = _manifest(tmp_path, demo_model_path, *((f"cold-{index}", key, None) for index, key in enumerate(keys)))
    server = launch(_env(s3, manifest, volume, S3_MAX_ATTEMPTS="1"))
    assert _chat(server.base_url, "local-demo").status_code == 200  # loaded before the burst
    pool = concurrent.futures.ThreadPoolExecutor(len(keys))
    try:
        cold = [pool.submit(_chat, server.base_url, f"cold-{index}") for index in range(len(keys))]
        assert wait_for(lambda: sum(s3.stats("models", key)["gets"] > 0 for key in keys) >= 4)
        assert _chat(server.base_url, "local-demo").status_code == 200
        assert not any(request.done() for request in cold)  # every sync is still under way
    finally:
        s3.kill()  # the syncs fail at once now (one attempt each)
        pool.shutdown(wait=True, cancel_futures=True)


def test_sigterm_during_a_requested_download_ends_it_after_the_drain(tmp_path, volume, demo_model_path, launch,
                                                                     s3_servers):
    """An instance stopped (scaled in) while a request waits for its model's download: once the drain
    timeout passes, the download stops, the request gets the drain's 503, and the process exits without
    waiting for the rest (minutes at this rate: past any platform's grace period), leaving no partial file."""
    s3 = s3_servers(bytes_per_second=64 * 1024)  # per connection: the demo model takes minutes
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, None))
    server = launch(_env(s3, manifest, volume, DRAIN_TIMEOUT_S="1"))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_chat, server.base_url, "remote")
        assert _download_started(volume), "the download never started"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(90) == 0
        reply = waiting.result()
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "draining"
    assert not _partial_files(volume) and not (volume / SYNCED).exists()


def test_memory_staging_serves_without_the_volume(launch, s3_servers, tmp_path, demo_model_path, volume,
                                                  demo_sha256):
    """MODEL_STAGING=memory: the object is streamed into memory, verified, loaded and released: nothing
    is written to the volume, and a model loaded again is fetched again."""
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, demo_sha256))
    server = launch(_env(s3, manifest, volume, MODEL_STAGING="memory"))
    first = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "remote", **ASK}, timeout=120)
    assert first.status_code == 200, first.text
    assert "x-cold-start" in first.headers and not any(volume.iterdir())
    assert "staged remote" in server.log()
    unloaded = httpx.post(f"{server.base_url}/models/remote/unload", timeout=60)
    assert unloaded.status_code == 200 and unloaded.json()["unloaded"] is True
    again = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "remote", **ASK}, timeout=120)
    assert again.status_code == 200 and again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert s3.stats("models", KEY)["downloads"] == 2 and not any(volume.iterdir())


def test_memory_staging_still_checks_the_sha256(launch, s3_servers, tmp_path, demo_model_path, volume):
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    manifest = _manifest(tmp_path, demo_model_path, ("remote", KEY, "0" * 64))
    server = launch(_env(s3, manifest, volume, MODEL_STAGING="memory"))
    refused = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "remote", **ASK}, timeout=120)
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "checksum_mismatch"
    local = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "local-demo", **ASK}, timeout=120)
    assert local.status_code == 200


def _has_open(pid, path):
    """Whether process `pid` has `path` open now (read through /proc)."""
    try:
        return any(os.path.realpath(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # a descriptor closed while listed
        return False


@pytest.mark.parametrize(("stop", "status", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_pull_stops_waiting_for_another_process(tmp_path, volume, demo_model_path, s3_servers, stop,
                                                               status, said):
    """Ctrl-C (or SIGTERM: an init container stopped) on a `python -m handler pull` that waits while another
    process downloads the same file ends it at once: its store is closed, which stops the lock's wait. Before,
    the interpreter joined the store's threads at exit, so an interrupted pull went on waiting until the
    other download ended; SIGTERM killed it with Python's default action."""
    s3 = s3_servers()
    s3.upload("models", KEY, demo_model_path)
    env = {**os.environ, **_env(s3, _manifest(tmp_path, demo_model_path, ("remote", KEY, None)), volume)}
    with exclusive_lock(volume / SYNCED):  # the other process's download
        pull = subprocess.Popen([sys.executable, "-m", "handler", "pull", "remote"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            lock = (volume / ".locks" / f"{SYNCED}.lock").resolve()
            assert wait_for(lambda: _has_open(pull.pid, lock), timeout=60, interval=0.05), "it never reached the lock"
            pull.send_signal(stop)
            assert pull.wait(60) == status
        finally:
            if pull.poll() is None:
                pull.kill()
                pull.wait(10)
    assert said in (pull.stderr.read() if pull.stderr else "")
    assert not _partial_files(volume) and not (volume / SYNCED).exists()
