"""The broker's timer task: sleeps until the core's next deadline (TTL, x-expires, ack timeouts)."""

from __future__ import annotations

import logging
import math

import trio

from amqplite.broker.broker import Broker

log = logging.getLogger("amqplite.server")


async def run_broker_timers(
    broker: Broker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Call broker.fire_timers() at each deadline; woken early when an earlier one appears."""
    wake = trio.Event()

    def on_change() -> None:
        wake.set()

    broker.on_timer_change = on_change
    task_status.started()
    try:
        while True:
            deadline = broker.next_deadline()
            delay = math.inf if deadline is None else deadline - broker.now()
            if delay > 0:
                with trio.move_on_after(delay):
                    await wake.wait()
            else:
                await trio.lowlevel.checkpoint()  # a backlog: let connections run between turns
            wake = trio.Event()
            try:
                broker.fire_timers()
            except Exception:  # the core survives a failing callback; this guards the rest
                log.exception("broker timer failed")
    finally:
        broker.on_timer_change = _no_wake


def _no_wake() -> None:
    """The timer task is gone: nothing to wake."""
