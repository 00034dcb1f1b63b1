"""Which free slot a prompt takes: the one it continues, else the least recently used."""

from __future__ import annotations

from handler.engine.slots import LONG_SHARED_PREFIX, Slot, choose_slot

SYSTEM = list(range(1000, 1020))  # a short system prompt every conversation starts with


def _slot(seq_id, cached, last_assigned):
    return Slot(seq_id=seq_id, cached=list(cached), last_assigned=last_assigned)


def test_a_follow_up_turn_takes_the_slot_holding_its_conversation():
    first = _slot(0, SYSTEM + [1, 2, 3, 4, 5], last_assigned=1)
    other = _slot(1, SYSTEM + [9, 9, 9], last_assigned=2)
    assert choose_slot([first, other], SYSTEM + [1, 2, 3, 4, 5, 6, 7]) == (first, len(SYSTEM) + 5)


def test_a_new_conversation_sharing_only_a_short_system_prompt_takes_the_least_recently_used_slot():
    busy_conversation = _slot(0, SYSTEM + list(range(60)), last_assigned=5)
    empty = _slot(1, [], last_assigned=0)
    assert choose_slot([busy_conversation, empty], SYSTEM + [7, 7, 7]) == (empty, 0)
    older = _slot(2, [5] * 80, last_assigned=3)
    assert choose_slot([busy_conversation, older], SYSTEM + [7, 7, 7])[0] is older


def test_a_long_shared_prefix_is_reused_even_past_another_conversation():
    system = list(range(LONG_SHARED_PREFIX + 10))
    long_conversation = _slot(0, system + list(range(5000, 5000 + 3 * len(system))), last_assigned=9)
    empty = _slot(1, [], last_assigned=0)
    assert choose_slot([long_conversation, empty], system + [1, 2])[0] is long_conversation


def test_with_nothing_to_reuse_the_least_recently_used_slot_is_taken():
    slots = [_slot(0, [1, 2], last_assigned=4), _slot(1, [3, 4], last_assigned=2), _slot(2, [5], last_assigned=7)]
    assert choose_slot(slots, [8, 8, 8])[0] is slots[1]


def test_a_new_prompt_takes_a_free_slot_next_to_the_busy_ones_not_the_least_recently_used():
    """llama.cpp computes a step once per run of consecutive sequence ids: a new sequence away from the
    busy ones would make every step one more pass over the model."""
    slots = [_slot(seq_id, [seq_id], last_assigned=100 - seq_id) for seq_id in range(8)]  # 7 least recent
    free = [slot for slot in slots if slot.seq_id not in (2, 3)]
    assert choose_slot(free, [9, 9], busy=[2, 3])[0].seq_id == 4  # 1 and 4 extend the run: 4 is older
    free = [slot for slot in slots if slot.seq_id not in (1, 3, 6)]
    assert choose_slot(free, [9, 9], busy=[1, 3, 6])[0].seq_id == 2  # joins two runs into one


def test_a_new_run_goes_to_the_least_recently_used_slot():
    slots = [_slot(seq_id, [seq_id], last_assigned=100 - seq_id) for seq_id in range(8)]
    assert choose_slot([slots[0], slots[5], slots[7]], [9, 9], busy=[2, 3])[0].seq_id == 7
    assert choose_slot(slots, [9, 9])[0].seq_id == 7  # nothing busy


def test_a_continued_conversation_keeps_its_slot_however_far_from_the_busy_ones():
    slots = [_slot(0, [], last_assigned=0), _slot(7, SYSTEM + [1, 2, 3], last_assigned=1)]
    assert choose_slot(slots, SYSTEM + [1, 2, 3, 4], busy=[1])[0].seq_id == 7
