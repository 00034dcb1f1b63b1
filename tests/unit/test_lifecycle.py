import asyncio
import os
import signal

import pytest

from handler.errors import ServiceUnavailable
from handler.lifecycle import Lifecycle


def test_first_request_is_marked_once():
    lifecycle = Lifecycle()
    assert lifecycle.begin() is True
    assert lifecycle.begin() is False
    assert lifecycle.in_flight == 2


def test_draining_refuses_new_requests_with_retry_after():
    lifecycle = Lifecycle()
    lifecycle.start_draining()
    with pytest.raises(ServiceUnavailable) as refused:
        lifecycle.begin()
    assert refused.value.code == "draining" and refused.value.retry_after_s == 1


def test_wait_idle():
    async def scenario():
        lifecycle = Lifecycle()
        lifecycle.begin()
        assert await lifecycle.wait_idle(0.05) is False
        asyncio.get_running_loop().call_later(0.05, lifecycle.end)
        return await lifecycle.wait_idle(5)

    assert asyncio.run(scenario()) is True


def test_sigterm_drains_and_chains_to_the_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("previous"))
    try:
        async def scenario():
            lifecycle = Lifecycle()
            lifecycle.install_signal_handlers()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            return lifecycle.draining

        assert asyncio.run(scenario()) is True
        assert seen == ["previous"]
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
