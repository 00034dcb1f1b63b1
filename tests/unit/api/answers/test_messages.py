"""The Messages shaper: a reply with reasoning, text and a tool call becomes thinking, text and
tool_use blocks, and its stream adds up (through the official SDK's own accumulator) to the same message."""

from __future__ import annotations

import asyncio
import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from handler.api.answers.messages import MessageShaper
from handler.api.calls import Replies, ServiceUnavailable
from handler.engine.chat import ChatEvent
from handler.engine.generation import Generation
from handler.engine.types import Usage
from handler.formats.output import OutputDelta, ToolCall

CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
REPLY = [ChatEvent(delta=OutputDelta(reasoning="The user wants ")), ChatEvent(delta=OutputDelta(reasoning="weather.")),
         ChatEvent(delta=OutputDelta(content="Let me look.")), ChatEvent(delta=OutputDelta(tool_call=CALL)),
         ChatEvent(finish_reason="tool_calls", usage=Usage(20, 9, cached_tokens=5))]


class _Call:
    """What replies report to: the first token and the outcome."""

    def __init__(self) -> None:
        self.outcome = None

    def first_token(self, at: float | None = None) -> None:
        pass

    def finished(self, reason: str, usage: Usage) -> None:
        self.outcome = (reason, usage)


async def _replies(events):
    async def source():
        for event in events:
            yield 0, event

    reader = Generation()
    reader.prompt_tokens, reader.cached_tokens = 20, 5
    return Replies(_Call(), [reader], source())  # type: ignore[arg-type]


def _body(events):
    async def run():
        return await MessageShaper("m").body(await _replies(events))

    return asyncio.run(run())


def _frames(events):
    async def run():
        return [frame async for frame in MessageShaper("m").frames(await _replies(events))]

    return b"".join(asyncio.run(run())).decode()


def test_blocks_stop_reason_and_usage():
    message = _body(REPLY)
    assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][0] == {"type": "thinking", "thinking": "The user wants weather.", "signature": ""}
    assert message["content"][2]["input"] == {"city": "Oslo"} and message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 15, "output_tokens": 9, "cache_read_input_tokens": 5,
                                "cache_creation_input_tokens": 0}


def test_the_stream_adds_up_to_the_message_in_the_sdk():
    snapshot = None
    for frame in _frames(REPLY).split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            event = json.loads(data.removeprefix("data: "))
            assert name == f"event: {event['type']}"
            if event["type"] != "ping":
                snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert snapshot is not None
    accumulated = snapshot.to_dict()
    message = _body(REPLY)
    assert accumulated["content"] == message["content"] and accumulated["stop_reason"] == "tool_use"
    assert accumulated["usage"]["output_tokens"] == 9 and accumulated["usage"]["input_tokens"] == 15


@pytest.mark.parametrize(("final", "reason"), [
    (ChatEvent(finish_reason="stop", usage=Usage(3, 1)), "end_turn"),
    (ChatEvent(finish_reason="stop", stop_sequence="###", usage=Usage(3, 1)), "stop_sequence"),
    (ChatEvent(finish_reason="length", usage=Usage(3, 1)), "max_tokens"),
])
def test_stop_reasons(final, reason):
    message = _body([ChatEvent(delta=OutputDelta(content="hi")), final])
    assert message["stop_reason"] == reason and message["stop_sequence"] == final.stop_sequence


def test_a_cut_reply_is_an_error_never_a_message():
    with pytest.raises(ServiceUnavailable):
        _body([ChatEvent(delta=OutputDelta(content="hi")), ChatEvent(finish_reason="cancelled")])
