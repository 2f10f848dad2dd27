"""The pacer's held readers: woken together when a queue catches up, let go on an idle loop, cancellable."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message
from amqplite.broker.queue import Queue
from amqplite.server.pacing import IDLE_AFTER, SWEEP_EVERY, Pacer


def behind_queue() -> tuple[Broker, Queue]:
    """A real broker with a queue marked behind on delivery (as dispatch would mark it)."""
    broker = Broker()
    queue = broker.add_vhost("/").declare_queue("q")
    broker.flow.set_behind(queue, True)
    return broker, queue


def paced(idle_after: float | None = IDLE_AFTER) -> tuple[Broker, Queue, Pacer, list[str]]:
    """A queue behind, its pacer, and the list the readers it lets go append their names to."""
    broker, queue = behind_queue()
    pacer = Pacer(broker.flow, idle_after=idle_after)
    return broker, queue, pacer, []


async def hold(pacer: Pacer, queue: Queue, returned: list[str], name: str) -> None:
    await pacer.wait_for([queue])
    returned.append(name)


@pytest.mark.trio
async def test_readers_held_for_a_queue_all_go_when_it_catches_up_and_not_before(
    mock_clock: Any,
) -> None:
    broker, queue, pacer, returned = paced(idle_after=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, pacer, queue, returned, "a")
        nursery.start_soon(hold, pacer, queue, returned, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []
        broker.flow.set_behind(queue, False)
        await trio.testing.wait_all_tasks_blocked()  # no time passes: woken, not swept
        assert sorted(returned) == ["a", "b"]


@pytest.mark.trio
async def test_a_held_reader_cancelled_is_forgotten_and_the_others_still_go() -> None:
    broker, queue, pacer, returned = paced(idle_after=None)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as dropped:
            nursery.start_soon(hold, pacer, queue, returned, "kept")
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as inner:  # its connection ends while it is held
                inner.start_soon(hold, pacer, queue, returned, "dropped")
                await trio.testing.wait_all_tasks_blocked()
                dropped.cancel()
        broker.flow.set_behind(queue, False)  # wakes the one left, not the one gone
    assert returned == ["kept"]


@pytest.mark.trio
async def test_an_idle_event_loop_lets_every_held_reader_go() -> None:
    _, queue, pacer, returned = paced()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, pacer, queue, returned, "a")
        nursery.start_soon(hold, pacer, queue, returned, "b")
    assert sorted(returned) == ["a", "b"]
    assert queue.behind  # let go, not caught up


@pytest.mark.trio
async def test_a_reader_held_on_a_busy_loop_looks_again_after_each_sweep(
    autojump_clock: Any,
) -> None:
    _, queue, pacer, returned = paced(idle_after=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, pacer, queue, returned, "a")
        await trio.sleep(SWEEP_EVERY * 3)
        assert returned == []  # still behind: held again after each look
        queue.behind = False  # caught up without telling (a sweep finds it)
        await trio.sleep(SWEEP_EVERY * 1.5)
        assert returned == ["a"]


def test_publishes_note_each_queue_behind_once_per_read_even_one_fallen_behind_meanwhile() -> None:
    broker, other = behind_queue()  # some queue is behind: publishes are looked at
    vhost = broker.vhost("/")
    queue = vhost.declare_queue("q1")

    def publish() -> None:
        broker.route(vhost, "", Message("", "q1", b"\x00\x00", b"x"))

    broker.flow.take_touched()  # a read begins
    publish()
    broker.flow.set_behind(queue, True)  # it falls behind after a publish to it
    publish()  # the same route as the first: noted all the same
    publish()
    assert broker.flow.take_touched() == [queue]
    publish()  # the next read notes it again
    assert broker.flow.take_touched() == [queue]
    assert broker.flow.take_touched() == []
    assert other.behind
