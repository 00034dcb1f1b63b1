"""The memory tier of saved prefixes, and how the store chooses between memory, the volume and not
restoring at all."""

from __future__ import annotations

import asyncio

from handler.store.prefix_ram import RamTier, Rate
from handler.store.prefixes import PrefixSpace, PrefixStore

KEY = b"k" * 32
SPACE = PrefixSpace("0" * 32, max_tokens=64, max_state_bytes=1000)


def test_the_longest_shared_state_is_found_and_the_least_recent_goes_first():
    ram = RamTier(budget_bytes=400)
    assert ram.put("s", (1, 2, 3), b"a" * 100) and ram.put("s", (7, 8), b"b" * 100)
    assert ram.best("s", (1, 2, 3, 4)).common == 3 and ram.best("other", (1, 2, 3)) is None
    assert ram.put("s", (9,), b"c" * 100) and ram.put("s", (10,), b"d" * 100)  # full
    assert ram.put("s", (11,), b"e" * 100)  # (7, 8) was the least recently used
    assert ram.best("s", (7, 8)) is None and ram.best("s", (1, 2)).tokens == (1, 2, 3)
    assert not ram.put("s", (12,), b"f" * 101)  # over a quarter of the budget: not kept


def test_a_longer_conversation_replaces_its_shorter_self():
    ram = RamTier(budget_bytes=1000)
    ram.put("s", (1, 2), b"a" * 10)
    ram.put("s", (1, 2, 3, 4), b"b" * 20)
    assert ram.known("s") == [(1, 2, 3, 4)] and ram.held_bytes == 20
    assert ram.holds("s", (1, 2, 3)) and not ram.holds("s", (1, 2, 3, 4, 5))
    ram.drop("s", (1, 2, 3, 4))
    assert ram.held_bytes == 0


def test_a_rate_predicts_from_what_was_measured():
    rate = Rate()
    assert rate.seconds_for(100) is None
    rate.record(1000, 2.0)
    assert rate.seconds_for(100) == 0.2


def _store(tmp_path, ram_bytes=4000):
    return PrefixStore(tmp_path / "kv", budget_bytes=1 << 20, min_tokens=4, key=KEY, ram_bytes=ram_bytes)


def _find(store, prompt, worth=None):
    return asyncio.run(store.find(SPACE, prompt, worth))


def test_memory_serves_first_and_the_volume_when_it_holds_more(tmp_path):
    store = _store(tmp_path)
    assert store.save_later(SPACE, tuple(range(10)), b"short")
    store.flush()
    found = _find(store, (*range(10), 99))
    assert found is not None and found.tier == "ram" and found.common == 10  # a tie: memory wins
    store.keep(SPACE, tuple(range(6)), b"x")  # memory holds less than the file: the file serves
    store.ram.drop(SPACE.name, tuple(range(10)))
    assert _find(store, (*range(10), 99)).tier == "volume"


def test_a_restore_predicted_slower_than_reading_is_not_made(tmp_path):
    store = _store(tmp_path)
    store.save_later(SPACE, tuple(range(10)), b"s" * 500)
    store.flush()
    store.ram.drop(SPACE.name, tuple(range(10)))
    asked = []

    def never(common, size, fetch):
        asked.append((common, size))
        return False

    assert _find(store, (*range(10), 99), never) is None
    assert asked and asked[0][0] == 10


def test_a_conversation_kept_in_memory_only_never_reaches_the_volume(tmp_path):
    store = _store(tmp_path)
    assert store.keep(SPACE, tuple(range(12)), b"state")
    store.flush()
    assert not list((tmp_path / "kv").rglob("*.kvprefix"))
    assert _find(store, tuple(range(12))).tier == "ram" and store.covers(SPACE, tuple(range(8)))


def test_without_a_memory_budget_nothing_is_kept(tmp_path):
    store = _store(tmp_path, ram_bytes=0)
    assert not store.keep(SPACE, tuple(range(12)), b"state")
    assert _find(store, tuple(range(12))) is None
