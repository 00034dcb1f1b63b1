"""The prefix store's files without a model: only what this deployment signed, for this namespace and
within its bounds, is ever handed out; everything else is removed and counted, never an error; writes
are bounded; temporary files are cleaned and counted; tenants have namespaces of their own."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.store import prefixes
from handler.store.prefixes import MAGIC, SUFFIX, PrefixSpace, PrefixStore, _Codec, load_key

KEY = b"k" * 32
SPACE = PrefixSpace("0" * 32, max_tokens=64, max_state_bytes=1000)
PROMPT = tuple(range(20))


def _store(tmp_path, key=KEY, budget=1 << 20):
    return PrefixStore(tmp_path / "kv", budget_bytes=budget, min_tokens=8, key=key)


def _write(tmp_path, data: bytes, name="a" * 32):
    folder = tmp_path / "kv" / SPACE.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX}"
    path.write_bytes(data)
    return path


def _file(header: object, tokens=PROMPT, state=b"s" * 100, raw_header: bytes | None = None) -> bytes:
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(body)) + body + struct.pack(f"<{len(tokens)}i", *tokens) + state


def _find(store, space=SPACE, prompt=PROMPT + (99,)):
    return asyncio.run(store.find(space, prompt))


def test_a_signed_file_round_trips(tmp_path):
    store = _store(tmp_path)
    assert store.save_later(SPACE, PROMPT, b"state")
    store.flush()
    found = _find(store)
    assert found is not None and found.tokens == PROMPT and found.state == b"state" and found.common == len(PROMPT)
    assert store.rejected.total() == 0


@pytest.mark.parametrize("change", ["flip a byte of a later piece", "swap two pieces"])
def test_every_piece_of_a_state_hashed_side_by_side_is_signed(tmp_path, monkeypatch, change):
    """The state is hashed in pieces on several threads; a change in any piece, or pieces in another
    order, breaks the signature (`pieces` ensures the state spans several)."""
    monkeypatch.setattr(prefixes, "MAC_PIECE_BYTES", 16)
    state = bytes(range(100))
    pieces = [state[start:start + 16] for start in range(0, len(state), 16)]
    assert len(pieces) > 2
    signed = _Codec(KEY).encode(SPACE.name, PROMPT, state)
    if change == "swap two pieces":
        forged = b"".join([pieces[1], pieces[0], *pieces[2:]])
    else:
        forged = state[:50] + bytes([state[50] ^ 1]) + state[51:]
    _write(tmp_path, signed[:-len(state)] + forged)
    store = _store(tmp_path)
    assert _find(store) is None and store.rejected["volume"] == 1
    _write(tmp_path, signed)
    found = _find(_store(tmp_path))
    assert found is not None and found.state == state


def test_a_file_signed_with_another_key_is_removed_and_counted(tmp_path):
    """Anyone who can write the directory (or the bucket prefix) could plant a state under a popular
    prompt: without this deployment's key it is never read into llama.cpp."""
    _write(tmp_path, _Codec(b"x" * 32).encode(SPACE.name, PROMPT, b"state"))
    store = _store(tmp_path)
    assert _find(store) is None
    assert not list((tmp_path / "kv").rglob(f"*{SUFFIX}")) and store.rejected["volume"] == 1


def test_a_file_signed_for_another_namespace_is_refused(tmp_path):
    _write(tmp_path, _Codec(KEY).encode("1" * 32, PROMPT, b"state"))
    store = _store(tmp_path)
    assert _find(store) is None and store.rejected["volume"] == 1


@pytest.mark.parametrize("header", [
    {"tokens": 65, "state": 10, "mac": "0" * 64},  # more tokens than the context holds
    {"tokens": 20, "state": 1001, "mac": "0" * 64},  # a state larger than a whole context's
    {"tokens": 30, "state": 100, "mac": "0" * 64},  # claims more tokens than the file has
    {"tokens": None, "state": 100, "mac": "0" * 64},
    {"tokens": True, "state": 100, "mac": "0" * 64},
    {"tokens": 20, "state": 100},
    [1, 2, 3],
    "text",
])
def test_a_header_out_of_bounds_or_malformed_is_removed_before_its_state_is_read(tmp_path, header):
    _write(tmp_path, _file(header))
    store = _store(tmp_path)
    assert _find(store) is None
    assert not list((tmp_path / "kv").rglob(f"*{SUFFIX}")) and store.rejected["volume"] == 1


def test_a_deeply_nested_or_oversized_header_is_refused(tmp_path):
    _write(tmp_path, _file(None, raw_header=b"[" * 200 + b"]" * 200), name="b" * 32)
    _write(tmp_path, _file(None, raw_header=b" " * 100_000), name="c" * 32)
    store = _store(tmp_path)
    assert _find(store) is None and store.rejected["volume"] == 2


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=400))
def test_no_bytes_ever_raise_or_get_through(tmp_path_factory, data, cut):
    """Arbitrary bytes, and a signed file cut anywhere: never an exception, never a state handed out."""
    tmp_path = tmp_path_factory.mktemp("kv")
    signed = _Codec(KEY).encode(SPACE.name, PROMPT, b"s" * 100)
    _write(tmp_path, MAGIC + data, name="d" * 32)
    _write(tmp_path, signed[:min(cut, len(signed) - 1)], name="e" * 32)
    store = _store(tmp_path)
    assert _find(store) is None
    assert store.rejected["volume"] == 2


def test_writes_are_bounded_and_pending_ones_count_as_covered(tmp_path):
    store = _store(tmp_path)
    store._writer.submit(time.sleep, 0.5)  # the writer is busy: what is queued waits
    other = tuple(range(100, 120))
    assert store.save_later(SPACE, PROMPT, b"a") and store.save_later(SPACE, other, b"b")
    assert store.covers(SPACE, PROMPT + (7,)) and store.covers(SPACE, other)
    assert not store.save_later(SPACE, tuple(range(200, 220)), b"c")  # full: dropped, never waits
    store.flush()
    assert len(list((tmp_path / "kv").rglob(f"*{SUFFIX}"))) == 2


def test_no_state_larger_than_a_quarter_of_the_budget_is_taken(tmp_path):
    store = _store(tmp_path, budget=400)
    assert not store.save_later(SPACE, PROMPT, b"x" * 101)
    assert store.save_later(SPACE, PROMPT, b"x" * 100)


def test_jobs_asking_for_one_file_share_one_loaded_state(tmp_path):
    store = _store(tmp_path)
    store.save_later(SPACE, PROMPT, b"state" * 100)
    store.flush()
    first, second = _find(store), _find(store, prompt=PROMPT + (5,))
    assert first is not None and second is not None and first.state is second.state


def test_a_tenant_has_a_namespace_of_its_own(tmp_path):
    store = _store(tmp_path)
    store.save_later(SPACE.for_tenant("alice"), PROMPT, b"state")
    store.flush()
    assert _find(store, SPACE.for_tenant("alice")) is not None
    assert _find(store, SPACE.for_tenant("bob")) is None and _find(store, SPACE) is None


def test_old_temporary_files_are_cleaned_at_start_and_new_ones_count_in_the_budget(tmp_path):
    folder = tmp_path / "kv" / SPACE.name
    folder.mkdir(parents=True)
    old, fresh = folder / ".old.1.2.part", folder / ".fresh.1.2.part"
    old.write_bytes(b"x" * 10)
    fresh.write_bytes(b"x" * 300)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store = _store(tmp_path, budget=400)
    assert not old.exists() and fresh.exists()
    store.save_later(SPACE, PROMPT, b"x" * 100)  # 300 bytes of temporaries + this file: over 400
    store.flush()
    assert not list(folder.glob(f"*{SUFFIX}"))


def test_the_key_is_made_once_and_kept_with_the_volume(tmp_path):
    key = load_key(tmp_path / "kv", None)
    assert load_key(tmp_path / "kv", None) == key and len(key) >= 32
    assert (tmp_path / "kv" / ".key").stat().st_mode & 0o777 == 0o600
    assert load_key(tmp_path / "kv", "configured-secret-" * 2) == b"configured-secret-" * 2
