import json

from hypothesis import given
from hypothesis import strategies as st

from handler.api.answers.sse import DONE, sse_event

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=20)


@given(payload=JSON)
def test_an_event_is_one_data_line_that_round_trips(payload):
    event = sse_event(payload)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = event[len(b"data: "):-2]
    assert b"\n" not in body  # newlines inside strings are escaped, so an event never splits
    assert json.loads(body) == payload


def test_done():
    assert DONE == b"data: [DONE]\n\n"
