"""The broker's timer task under trio's autojump clock: deadlines fire on (virtual) time."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from queue_helpers import JournalRefusingOnce, persistent

from amqplite.broker.broker import Broker
from amqplite.server.timers import run_broker_timers


@pytest.mark.trio
async def test_a_failing_timer_callback_does_not_stop_ttl_expiry_of_its_queue(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(clock=trio.current_time, wall_clock=trio.current_time)
    vhost = broker.add_vhost("/")
    queue = vhost.declare_queue("q", durable=True)
    journal = queue.journal = JournalRefusingOnce()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_broker_timers, broker)
        for i, ttl in enumerate((1000, 2000, 3000)):
            vhost.publish("", persistent(f"m{i}".encode(), ttl))
        # Virtual time: the autojump clock moves only when every task is blocked, so each
        # deadline before this instant (1, 2, 3 s, and the failed one's retry) has fired.
        await trio.sleep_until(trio.current_time() + 10)
        assert queue.message_count == 0
        nursery.cancel_scope.cancel()
    assert journal.removed == [1, 2]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
