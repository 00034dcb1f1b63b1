"""Which requests the device can sample: plain greedy, and unseeded draws; never one whose logits the
host must change or whose seed promises a reply."""

from __future__ import annotations

import pytest

from handler.engine.sampling import GREEDY, DeviceChain, device_chain
from handler.engine.types import SamplingParams

VOCABULARY = 151_936


def _chain(shares_first_row: bool = False, **params) -> DeviceChain | None:
    return device_chain(SamplingParams(max_tokens=8, **params), None, VOCABULARY, shares_first_row)


def test_greedy_is_greedy_even_for_choices_sharing_a_row():
    assert _chain(temperature=0) == GREEDY
    assert _chain(temperature=0, shares_first_row=True) == GREEDY


def test_the_api_default_unseeded_draw_runs_on_the_device():
    assert _chain(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05) == DeviceChain(0.7, 40, 0.9, 0.05)


@pytest.mark.parametrize(("top_k", "top_p", "min_p"), [(0, 1.0, 0.0), (VOCABULARY, 1.0, 0.0), (-1, 1.5, -0.1)])
def test_settings_that_change_nothing_are_left_out(top_k, top_p, min_p):
    assert _chain(temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p) == DeviceChain(1.0, 0, 1.0, 0.0)


@pytest.mark.parametrize("params", [
    {"temperature": 0.7, "seed": 7},  # a seed promises a reply: the device would draw another one
    {"temperature": 0.7, "logit_bias": {5: 1.0}},
    {"temperature": 0, "logit_bias": {5: 1.0}},
    {"temperature": 0.7, "repeat_penalty": 1.1},
    {"temperature": 0, "presence_penalty": 0.5},
    {"temperature": 0.7, "frequency_penalty": 0.5},
])
def test_seeded_biased_or_penalised_requests_stay_on_the_host(params):
    assert _chain(**params) is None


def test_choices_drawing_from_one_row_stay_on_the_host():
    """Sibling choices sample their first token from the leader's row: on the device they would all get
    the token its chain drew."""
    assert _chain(temperature=0.7, shares_first_row=True) is None
