"""Saved prompt prefixes across processes: a server that read a long system prompt leaves its KV state
on the volume; the next server process restores it for its first request and says so."""

from __future__ import annotations

import httpx

CHAT = "smollm2-135m"
SYSTEM = {"role": "system", "content": "You answer questions about this inventory. " + " ".join(
    f"Shelf {n} holds {n * 3} red boxes and {n + 7} blue jars." for n in range(40))}


def _ask(server, question):
    return httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, json={
        "model": CHAT, "max_tokens": 8, "temperature": 0,
        "messages": [SYSTEM, {"role": "user", "content": question}]})


def test_the_next_process_restores_a_saved_prefix(launch, tmp_path):
    env = {"KV_CACHE_DIR": str(tmp_path / "kv"), "KV_CACHE_MB": "512", "KV_CACHE_MIN_TOKENS": "64"}
    first = launch(env)
    answer = _ask(first, "What is on shelf 3?")
    assert answer.status_code == 200 and "x-prefix-from-volume" not in answer.headers
    assert first.stop() == 0  # a clean stop finishes the writes
    assert list((tmp_path / "kv").glob("*/*.kvprefix"))
    second = launch(env)
    restored = _ask(second, "What is on shelf 5?")
    assert restored.status_code == 200
    prompt_tokens = restored.json()["usage"]["prompt_tokens"]
    assert 64 <= int(restored.headers["x-prefix-from-volume"]) < prompt_tokens
    assert "gguf_prefixes_restored_total" in httpx.get(f"{second.base_url}/metrics").text


def test_kv_cache_mb_zero_turns_it_off(launch, tmp_path):
    env = {"KV_CACHE_DIR": str(tmp_path / "kv"), "KV_CACHE_MB": "0", "KV_CACHE_MIN_TOKENS": "64"}
    server = launch(env)
    assert _ask(server, "What is on shelf 3?").status_code == 200
    server.stop()
    assert not (tmp_path / "kv").exists()
