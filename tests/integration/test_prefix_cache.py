"""Saved prompt prefixes across processes: a server that read a long system prompt leaves its KV state
on the volume; the next server process restores it for its first request and says so."""

from __future__ import annotations

import httpx

from tests.support.waiting import wait_for

CHAT = "smollm2-135m"
SYSTEM = {"role": "system", "content": "You answer questions about this inventory. " + " ".join(
    f"Shelf {n} holds {n * 3} red boxes and {n + 7} blue jars." for n in range(40))}


SHARED_KEY = "a-secret-every-instance-shares-0123456789"


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


def _conversation_tokens(server, question):
    return httpx.post(f"{server.base_url}/tokenize", timeout=60, json={
        "model": CHAT, "messages": [SYSTEM, {"role": "user", "content": question}]}).json()["tokens"]


# The same conversation on every generating route (completions gets the rendered prompt's tokens).
ROUTES = {
    "completions": lambda server, question: ("/v1/completions", {
        "prompt": _conversation_tokens(server, question), "max_tokens": 4}),
    "responses": lambda server, question: ("/v1/responses", {
        "instructions": SYSTEM["content"], "input": question, "max_output_tokens": 4}),
    "messages": lambda server, question: ("/v1/messages", {
        "system": SYSTEM["content"], "messages": [{"role": "user", "content": question}], "max_tokens": 4}),
}


def test_every_generating_route_says_what_it_restored(launch, tmp_path):
    """`x-prefix-from-volume` was sent by the chat route only."""
    env = {"KV_CACHE_DIR": str(tmp_path / "kv"), "KV_CACHE_MB": "512", "KV_CACHE_MIN_TOKENS": "64"}
    writer = launch(env)
    assert _ask(writer, "What is on shelf 3?").status_code == 200
    assert writer.stop() == 0
    for route, request in ROUTES.items():
        server = launch(env)
        path, body = request(server, "What is on shelf 5?")
        answer = httpx.post(f"{server.base_url}{path}", json={"model": CHAT, "temperature": 0, **body}, timeout=120)
        assert answer.status_code == 200, (route, answer.text)
        assert int(answer.headers.get("x-prefix-from-volume", 0)) >= 64, route
        assert answer.headers["x-prefix-source"] == "volume"
        assert server.stop() == 0


def test_kv_cache_mb_zero_turns_it_off(launch, tmp_path):
    env = {"KV_CACHE_DIR": str(tmp_path / "kv"), "KV_CACHE_MB": "0", "KV_CACHE_MIN_TOKENS": "64"}
    server = launch(env)
    assert _ask(server, "What is on shelf 3?").status_code == 200
    server.stop()
    assert not (tmp_path / "kv").exists()


def _ready(server):
    return wait_for(lambda: httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code == 200)


def test_warm_prompts_are_read_before_readiness_and_restored_by_the_next_process(launch, tmp_path):
    (tmp_path / "system.txt").write_text(SYSTEM["content"])
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[models]]\nname = "{CHAT}"\nsource = "SmolLM2-135M-Instruct.Q4_1.gguf"\nwarm = true\n'
                        'warm_prompts = [{ file = "system.txt" }]\n')
    env = {"MODELS_MANIFEST": str(manifest), "KV_CACHE_DIR": str(tmp_path / "kv"), "KV_CACHE_MB": "512",
           "KV_CACHE_MIN_TOKENS": "64"}
    first = launch(env)
    assert _ready(first)
    answer = _ask(first, "What is on shelf 3?")  # the system prompt is already in a slot
    system_tokens = answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert system_tokens > 64 and "x-prefix-from-volume" not in answer.headers
    assert first.stop() == 0
    assert list((tmp_path / "kv").glob("*/*.kvprefix"))

    second = launch(env)
    assert _ready(second)
    assert "warm prompt 1 of smollm2-135m read (" in second.log()  # … tokens restored from the volume
    answer = _ask(second, "What is on shelf 5?")
    assert answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= system_tokens
    assert "x-prefix-from-volume" not in answer.headers  # restored at warm-up, before this request


def _shared(s3, tmp_path, volume):
    return {**s3.app_env(), "KV_CACHE_DIR": str(tmp_path / volume), "KV_CACHE_MB": "512", "KV_CACHE_MIN_TOKENS": "64",
            "KV_CACHE_S3": "s3://kv-cache/shared/", "KV_CACHE_KEY": SHARED_KEY}


def test_an_instance_with_an_empty_volume_starts_with_the_prefixes_others_shared(launch, tmp_path, s3_servers):
    s3 = s3_servers()
    s3.client().create_bucket(Bucket="kv-cache")
    first = launch(_shared(s3, tmp_path, "volume-a"))
    assert _ask(first, "What is on shelf 3?").status_code == 200
    assert first.stop() == 0  # the upload follows the local write, before the process ends
    shared = [item["Key"] for item in s3.client().list_objects_v2(Bucket="kv-cache").get("Contents", [])]
    assert len(shared) == 1 and shared[0].startswith("shared/") and shared[0].endswith(".kvprefix")

    second = launch(_shared(s3, tmp_path, "volume-b"))  # nothing on this volume yet
    restored = _ask(second, "What is on shelf 5?")
    assert restored.status_code == 200
    assert int(restored.headers["x-prefix-from-volume"]) >= 64
    assert [path.name for path in (tmp_path / "volume-b").glob("*/*.kvprefix")] == [shared[0].rsplit("/", 1)[1]]
    assert not list((tmp_path / "volume-b").glob("*/.*.part"))


def test_a_damaged_shared_prefix_is_never_loaded(launch, tmp_path, s3_servers):
    s3 = s3_servers()
    s3.client().create_bucket(Bucket="kv-cache")
    first = launch(_shared(s3, tmp_path, "volume-a"))
    expected = _ask(first, "What is on shelf 3?").json()["choices"][0]["message"]["content"]
    assert first.stop() == 0
    (key,) = [item["Key"] for item in s3.client().list_objects_v2(Bucket="kv-cache")["Contents"]]
    whole = s3.client().get_object(Bucket="kv-cache", Key=key)["Body"].read()
    damaged = whole[:-100] + bytes(100)  # the same header and tokens, a corrupt state
    s3.upload("kv-cache", key, damaged)
    s3.upload("kv-cache", key.rsplit("/", 1)[0] + "/../escape.kvprefix", b"not ours")  # a name we never write

    second = launch(_shared(s3, tmp_path, "volume-b"))
    answer = _ask(second, "What is on shelf 3?")
    assert answer.status_code == 200 and "x-prefix-from-volume" not in answer.headers
    assert answer.json()["choices"][0]["message"]["content"] == expected
    assert not list((tmp_path / "volume-b").rglob("*.kvprefix.*part"))
    assert "ignoring the shared prefix" in second.log()
    assert not (tmp_path / "escape.kvprefix").exists() and not list(tmp_path.rglob("escape*"))


def test_a_shared_prefix_signed_with_another_key_is_never_loaded(launch, tmp_path, s3_servers):
    """Anyone who can write the bucket prefix can upload a well-formed file under a popular prompt's
    name: without this deployment's key it is ignored (and counted), and the reply is the model's own."""
    s3 = s3_servers()
    s3.client().create_bucket(Bucket="kv-cache")
    attacker = launch({**_shared(s3, tmp_path, "volume-a"), "KV_CACHE_KEY": "an-attackers-own-key-0123456789abc"})
    assert _ask(attacker, "What is on shelf 3?").status_code == 200
    assert attacker.stop() == 0
    (forged,) = [item["Key"] for item in s3.client().list_objects_v2(Bucket="kv-cache")["Contents"]]

    server = launch(_shared(s3, tmp_path, "volume-b"))
    answer = _ask(server, "What is on shelf 5?")
    assert answer.status_code == 200 and "x-prefix-from-volume" not in answer.headers
    assert 'gguf_prefix_files_rejected_total{source="s3"} 1.0' in httpx.get(f"{server.base_url}/metrics").text
    assert forged.rsplit("/", 1)[1] not in [path.name for path in (tmp_path / "volume-b").rglob("*.kvprefix")]


def test_with_several_api_keys_a_prompt_is_reused_only_by_its_own_key(launch, tmp_path):
    """In a slot and on the volume: a second key's identical prompt is read in full (its timing says
    nothing about the first key's prompts); the same key reuses it."""
    server = launch({"API_KEY": "key-of-alice,key-of-bob", "KV_CACHE_DIR": str(tmp_path / "kv"),
                     "KV_CACHE_MB": "512", "KV_CACHE_MIN_TOKENS": "64"})

    def cached(key):
        answer = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": CHAT, "max_tokens": 2, "temperature": 0,
                                  "messages": [SYSTEM, {"role": "user", "content": "What is on shelf 3?"}]})
        assert answer.status_code == 200
        return answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert [cached("key-of-alice"), cached("key-of-bob")] == [0, 0]
    assert cached("key-of-alice") > 64 and cached("key-of-bob") > 64
    assert server.stop() == 0
    assert len({path.parent.name for path in (tmp_path / "kv").glob("*/*.kvprefix")}) == 2  # a namespace each
