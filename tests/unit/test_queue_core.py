"""Queue features in the pure core with a fake clock: priorities, TTL, expiry, limits, SAC, timeouts."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
from queue_helpers import (
    Client,
    FakeClock,
    JournalRefusingOnce,
    get_all,
    headers_of,
    make_broker,
    msg,
    persistent,
)

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import QueueEntry
from amqplite.broker.queue import EXPIRE_BATCH
from amqplite.broker.ready_list import ReadyList
from amqplite.broker.ttl_index import TtlIndex
from amqplite.broker.vhost import VHost
from amqplite.protocol.errors import ChannelException


def consume(broker: Broker, channel: DeliveryChannel, queue: str, tag: str, **kwargs: Any) -> None:
    """basic.consume as the session does it: subscribe, then deliver what is ready."""
    consumer = broker.consume(broker.vhosts["/"], channel, queue, tag, **kwargs)
    consumer.queue.dispatch()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> Broker:
    return make_broker(clock)


@pytest.fixture
def vhost(broker: Broker) -> VHost:
    return broker.vhosts["/"]


# -- priorities ----------------------------------------------------------------------------


def test_priority_queue_delivers_highest_first_and_fifo_within_a_level(
    broker: Broker, vhost: VHost
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 5})
    for body, prio in [(b"a0", 0), (b"b3", 3), (b"c1", 1), (b"d3", 3), (b"e5", 5), (b"f0", 0)]:
        vhost.publish("", msg(body, priority=prio))
    queue._check()
    assert get_all(broker, "q") == [b"e5", b"b3", b"d3", b"c1", b"a0", b"f0"]


def test_priority_above_the_maximum_counts_as_the_maximum(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q", arguments={"x-max-priority": 2})
    vhost.publish("", msg(b"two", priority=2))
    vhost.publish("", msg(b"nine", priority=9))
    vhost.publish("", msg(b"one", priority=1))
    assert get_all(broker, "q") == [b"two", b"nine", b"one"]


def test_requeued_message_keeps_its_priority_and_place(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 3})
    vhost.publish("", msg(b"hi1", priority=3))
    vhost.publish("", msg(b"hi2", priority=3))
    vhost.publish("", msg(b"lo", priority=1))
    client = Client(broker)
    ch = client.channel()
    ch.prefetch_count = 1
    consume(broker, ch, "q", "c")
    queue.dispatch()
    assert client.bodies() == [b"hi1"]
    broker.reject(ch, 1, False, requeue=True)
    queue._check()
    assert client.bodies() == [b"hi1", b"hi1"]
    assert client.delivered[1][3].redelivered


def test_queue_without_max_priority_ignores_message_priority(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q")
    vhost.publish("", msg(b"lo", priority=0))
    vhost.publish("", msg(b"hi", priority=9))
    assert get_all(broker, "q") == [b"lo", b"hi"]


@pytest.mark.parametrize("value", [256, -1, "x"])
def test_invalid_max_priority_is_refused_with_406(vhost: VHost, value: object) -> None:
    with pytest.raises(ChannelException) as info:
        vhost.declare_queue("q", arguments={"x-max-priority": value})
    assert info.value.reply_code == 406
    assert "x-max-priority" in info.value.reply_text
    assert "q" not in vhost.queues


# -- TTL -----------------------------------------------------------------------------------


def test_short_ttl_message_behind_long_ttl_ones_expires_on_time(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    queue = vhost.declare_queue("q")
    for i in range(3):
        vhost.publish("", msg(f"long{i}".encode(), expiration_ms=60_000))
    vhost.publish("", msg(b"short", expiration_ms=50))
    vhost.publish("", msg(b"forever"))
    assert broker.next_deadline() == pytest.approx(clock.now + 0.05)
    clock.advance(0.05)
    broker.fire_timers()
    queue._check()
    assert queue.stats.expired == 1
    assert get_all(broker, "q") == [b"long0", b"long1", b"long2", b"forever"]


def test_smaller_of_message_and_queue_ttl_wins(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.declare_queue("q", arguments={"x-message-ttl": 100})
    vhost.publish("", msg(b"queue-ttl"))
    vhost.publish("", msg(b"msg-shorter", expiration_ms=10))
    vhost.publish("", msg(b"msg-longer", expiration_ms=1000))
    clock.advance(0.01)
    broker.fire_timers()
    assert vhost.queues["q"].message_count == 2
    clock.advance(0.09)
    broker.fire_timers()
    assert get_all(broker, "q") == []


def test_ttl_zero_expires_unless_a_consumer_takes_it_at_once(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    vhost.publish("", msg(b"nobody", expiration_ms=0))
    assert queue.message_count == 0
    assert queue.stats.expired == 1
    client = Client(broker)
    consume(broker, client.channel(), "q", "c")
    vhost.publish("", msg(b"taken", expiration_ms=0))
    assert client.bodies() == [b"taken"]


def test_unacked_message_does_not_expire_but_expires_when_requeued_late(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 1000})
    vhost.publish("", msg(b"m"))
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    clock.advance(5)
    broker.fire_timers()
    assert queue.unacked_count == 1
    broker.cancel(vhost, ch, "c")
    broker.reject(ch, 1, False, requeue=True)
    assert queue.message_count == 0
    assert queue.stats.expired == 1


def test_a_failing_timer_callback_is_logged_and_the_queue_keeps_expiring(
    broker: Broker, vhost: VHost, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = vhost.declare_queue("q", durable=True)
    journal = queue.journal = JournalRefusingOnce()
    for i, ttl in enumerate((1000, 2000, 3000)):
        vhost.publish("", persistent(f"m{i}".encode(), ttl))
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="amqplite.broker"):
        broker.fire_timers()  # expiring m0 fails in the journal
    assert "No space left on device" in caplog.text
    assert queue.message_count == 2
    clock.advance(3)  # past the other deadlines and any retry delay
    while (deadline := broker.next_deadline()) is not None and deadline <= clock.now:
        broker.fire_timers()
    assert queue.message_count == 0
    assert journal.removed == [1, 2]
    queue._check()


def test_many_messages_expire_in_bounded_turns(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 10})
    for i in range(5000):
        vhost.publish("", msg(str(i).encode()))
    clock.advance(1)
    turns = 0
    while (deadline := broker.next_deadline()) is not None and deadline <= clock.now:
        broker.fire_timers()
        turns += 1
    assert queue.message_count == 0
    assert turns == -(-5000 // EXPIRE_BATCH)  # bounded work per turn
    queue._check()


def test_queue_expires_when_unused(broker: Broker, vhost: VHost, clock: FakeClock) -> None:
    vhost.declare_queue("q", arguments={"x-expires": 1000})
    clock.advance(0.5)
    vhost.declare_queue("q", arguments={"x-expires": 1000})  # redeclare counts as use
    clock.advance(0.9)
    broker.fire_timers()
    assert "q" in vhost.queues
    clock.advance(0.2)
    broker.fire_timers()
    assert "q" not in vhost.queues


def test_queue_with_consumer_does_not_expire(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.declare_queue("q", arguments={"x-expires": 1000})
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    clock.advance(5)
    broker.fire_timers()
    assert "q" in vhost.queues
    broker.cancel(vhost, ch, "c")
    clock.advance(1)
    broker.fire_timers()
    assert "q" not in vhost.queues


# -- dead-lettering ------------------------------------------------------------------------


def _dlx_setup(vhost: VHost, **arguments: object) -> None:
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("dead")
    vhost.bind("dlx", _queue("dead"), "")
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx", **arguments})


def _queue(name: str):  # type: ignore[no-untyped-def]
    from amqplite.broker.plugin_api import Destination

    return Destination("queue", name)


def test_rejected_message_is_dead_lettered_with_x_death(broker: Broker, vhost: VHost) -> None:
    _dlx_setup(vhost)
    vhost.publish("", msg(b"bad"))
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    broker.reject(ch, 1, False, requeue=False)
    dead = vhost.queues["dead"]
    [entry] = list(dead.ready)
    headers = headers_of(entry.message)
    [death] = headers["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == "q"
    assert death["exchange"] == ""
    assert death["routing-keys"] == ["q"]
    assert int(death["time"].timestamp()) == 1_700_000_000
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == "q"
    assert headers["x-first-death-exchange"] == ""
    assert entry.message.exchange == "dlx"
    assert vhost.queues["q"].stats.dead_lettered == 1
    assert broker.totals.dead_lettered == 1


def test_expired_message_is_dead_lettered_without_expiration(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    _dlx_setup(vhost, **{"x-dead-letter-routing-key": "rk"})
    from amqplite.protocol.properties import decode_properties, encode_properties

    props = decode_properties(b"\x00\x00")
    props.expiration = "20"
    props.content_type = "text/plain"
    message = msg(b"old", expiration_ms=20)
    message.properties_bin = encode_properties(props)
    vhost.publish("", message)
    clock.advance(0.02)
    broker.fire_timers()
    [entry] = list(vhost.queues["dead"].ready)
    out = decode_properties(entry.message.properties_bin)
    assert out.expiration is None
    assert out.content_type == "text/plain"
    [death] = out.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "20"
    assert entry.message.routing_key == "rk"


def test_dead_letter_cycle_without_rejection_is_dropped(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "", "x-message-ttl": 10})
    vhost.publish("", msg(b"loop"))
    clock.advance(0.01)
    broker.fire_timers()
    assert vhost.queues["q"].message_count == 0


def test_dead_letter_cycle_through_rejection_continues_and_counts(
    broker: Broker, vhost: VHost
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": ""})
    vhost.publish("", msg(b"again"))
    client = Client(broker)
    ch = client.channel()
    ch.prefetch_count = 1
    consume(broker, ch, "q", "c")
    broker.reject(ch, 1, False, requeue=False)
    broker.reject(ch, 2, False, requeue=False)
    assert queue.unacked_count == 1
    death = headers_of(client.messages[2])["x-death"]
    assert [(d["reason"], d["count"]) for d in death] == [("rejected", 2)]


def test_missing_dead_letter_exchange_drops_the_message(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "nowhere"})
    vhost.publish("", msg(b"x"))
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    broker.reject(ch, 1, False, requeue=False)
    assert queue.stats.reject == 1
    assert queue.stats.dead_lettered == 0


# -- limits --------------------------------------------------------------------------------


def test_max_length_drop_head_dead_letters_the_oldest(broker: Broker, vhost: VHost) -> None:
    _dlx_setup(vhost, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3", b"4"):
        vhost.publish("", msg(body))
    vhost.queues["q"]._check()
    assert vhost.queues["q"].stats.dropped == 2
    dead = [e.message for e in vhost.queues["dead"].ready]
    assert [m.body for m in dead] == [b"1", b"2"]
    assert headers_of(dead[0])["x-death"][0]["reason"] == "maxlen"
    assert get_all(broker, "q") == [b"3", b"4"]


def test_max_length_bytes_counts_body_bytes(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q", arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        vhost.publish("", msg(body))
    assert get_all(broker, "q") == [b"bbbb", b"cccc"]


def test_reject_publish_refuses_new_messages_and_reports_them(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert broker.route(vhost, "", msg(b"first")).rejected == []
    routed = broker.route(vhost, "", msg(b"second"))
    assert [q.name for q in routed.rejected] == ["q"]
    assert routed.accepted == []
    assert get_all(broker, "q") == [b"first"]


def test_reject_publish_dlx_dead_letters_the_refused_message(broker: Broker, vhost: VHost) -> None:
    _dlx_setup(vhost, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    vhost.publish("", msg(b"kept"))
    assert broker.route(vhost, "", msg(b"refused")).rejected
    [entry] = list(vhost.queues["dead"].ready)
    assert entry.message.body == b"refused"
    assert headers_of(entry.message)["x-death"][0]["reason"] == "maxlen"


def test_invalid_overflow_is_refused(vhost: VHost) -> None:
    with pytest.raises(ChannelException) as info:
        vhost.declare_queue("q", arguments={"x-overflow": "explode"})
    assert info.value.reply_code == 406


# -- delivery limit ------------------------------------------------------------------------


def test_delivery_limit_dead_letters_after_too_many_redeliveries(
    broker: Broker, vhost: VHost
) -> None:
    _dlx_setup(vhost, **{"x-delivery-limit": 2})
    vhost.publish("", msg(b"poison"))
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    for tag in (1, 2, 3):
        broker.reject(ch, tag, False, requeue=True)
    assert len(client.delivered) == 3
    counts = [headers_of(m).get("x-delivery-count") for m in client.messages]
    assert counts == [0, 1, 2]
    [entry] = list(vhost.queues["dead"].ready)
    assert headers_of(entry.message)["x-death"][0]["reason"] == "delivery_limit"
    assert vhost.queues["q"].message_count == 0


# -- consumers -----------------------------------------------------------------------------


def test_single_active_consumer_gets_everything_until_it_leaves(
    broker: Broker, vhost: VHost
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "first")
    consume(broker, ch, "q", "second")
    for i in range(3):
        vhost.publish("", msg(str(i).encode()))
    assert client.tags() == ["first"] * 3
    broker.cancel(vhost, ch, "first")
    vhost.publish("", msg(b"3"))
    assert client.tags() == ["first"] * 3 + ["second"]
    assert queue.active_consumer is not None
    assert queue.active_consumer.tag == "second"


def test_higher_priority_consumers_receive_first(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q")
    client = Client(broker)
    low, high = client.channel(1), client.channel(2)
    high.prefetch_count = 2
    consume(broker, low, "q", "low")
    consume(broker, high, "q", "high", arguments={"x-priority": 10})
    for i in range(4):
        vhost.publish("", msg(str(i).encode()))
    assert client.tags() == ["high", "high", "low", "low"]


def test_consumers_of_equal_priority_share_round_robin(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q")
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "a", arguments={"x-priority": 5})
    consume(broker, ch, "q", "b", arguments={"x-priority": 5})
    consume(broker, ch, "q", "c", arguments={"x-priority": 1})
    for i in range(4):
        vhost.publish("", msg(str(i).encode()))
    assert sorted(client.tags()) == ["a", "a", "b", "b"]


def test_consumer_timeout_closes_channel_with_406_and_requeues(
    clock: FakeClock,
) -> None:
    broker = make_broker(clock, consumer_timeout_ms=1000)
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q")
    vhost.publish("", msg(b"slow"))
    client = Client(broker)
    ch = client.channel(3)
    consume(broker, ch, "q", "c")
    clock.advance(0.999)
    broker.fire_timers()
    assert client.closed == []
    clock.advance(0.001)
    broker.fire_timers()
    [(channel_id, code, text)] = client.closed
    assert (channel_id, code) == (3, 406)
    assert "delivery acknowledgement on channel 3 timed out" in text
    assert "1000 ms" in text
    assert queue.message_count == 1
    assert queue.unacked_count == 0


def test_queue_consumer_timeout_argument_overrides_the_default(clock: FakeClock) -> None:
    broker = make_broker(clock, consumer_timeout_ms=60_000)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", arguments={"x-consumer-timeout": 100})
    vhost.publish("", msg(b"m"))
    client = Client(broker)
    consume(broker, client.channel(), "q", "c")
    clock.advance(0.1)
    broker.fire_timers()
    assert client.closed
    assert "100 ms" in client.closed[0][2]


def test_acked_deliveries_do_not_time_out(clock: FakeClock) -> None:
    broker = make_broker(clock, consumer_timeout_ms=1000)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c")
    vhost.publish("", msg(b"m"))
    broker.ack(ch, 1, False)
    clock.advance(10)
    broker.fire_timers()
    assert client.closed == []
    assert broker.next_deadline() is None


# -- invariants under random operations ---------------------------------------------------


def test_random_operations_keep_queue_invariants(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    rng = random.Random(1234)
    _dlx_setup(vhost, **{"x-max-priority": 4, "x-max-length": 40, "x-message-ttl": 500})
    queue = vhost.queues["q"]
    client = Client(broker)
    ch = client.channel()
    ch.prefetch_count = 5
    consuming = False
    for step in range(3000):
        op = rng.random()
        if op < 0.45:
            vhost.publish(
                "",
                msg(
                    str(step).encode(),
                    priority=rng.randrange(6),
                    expiration_ms=rng.choice([None, 0, 50, 300]),
                ),
            )
        elif op < 0.6 and ch.unacked:
            tag = rng.choice(list(ch.unacked))
            broker.reject(ch, tag, False, requeue=rng.random() < 0.5)
        elif op < 0.7 and ch.unacked:
            broker.ack(ch, rng.choice(list(ch.unacked)), False)
        elif op < 0.75:
            if consuming:
                broker.cancel(vhost, ch, "c")
            else:
                consume(broker, ch, "q", "c")
            consuming = not consuming
        else:
            clock.advance(rng.random() * 0.1)
            broker.fire_timers()
        queue._check()
        assert queue.message_count <= 40
        assert queue.unacked_count == len(ch.unacked)


# -- ready list and expiry at scale ----------------------------------------------------------


def test_ready_list_keeps_queue_order_under_random_removal_across_blocks() -> None:
    rng = random.Random(99)
    ready = ReadyList()
    model: dict[int, QueueEntry] = {}  # seq -> entry, what should be ready
    taken: list[QueueEntry] = []
    seq = 0
    for step in range(20_000):
        op = rng.random()
        if op < 0.45:
            seq += rng.choice([1, 1, 1, 7, 900, 3000])  # gaps as other priority levels leave
            entry = QueueEntry(seq, msg(b"m"))
            ready.append(entry)
            model[seq] = entry
        elif op < 0.6:
            head = ready.popleft()
            if model:
                assert head is model.pop(min(model))
                taken.append(head)
            else:
                assert head is None
        elif op < 0.7 and taken:
            back = taken.pop(rng.randrange(len(taken)))
            ready.requeue(back)
            model[back.seq] = back
        elif model:
            gone = model.pop(rng.choice(list(model)))
            ready.remove(gone)
            assert not gone.ready
        if step % 500 == 0:
            assert [e.seq for e in ready] == sorted(model)
        assert len(ready) == len(model)
    for expected in sorted(model):
        entry = ready.popleft()
        assert entry is not None
        assert entry.seq == expected
    assert ready.popleft() is None
    assert len(ready) == 0


def test_entries_removed_from_the_middle_release_their_blocks() -> None:
    ready = ReadyList()
    entries = [QueueEntry(seq, msg(b"m")) for seq in range(50_000)]
    for entry in entries:
        ready.append(entry)
    for entry in entries[1:]:  # everything but the head expires: no pass over the rest
        ready.remove(entry)
    assert len(ready) == 1
    assert len(ready._blocks) <= 2  # the head's and the tail's
    assert list(ready) == [entries[0]]


def test_expired_messages_are_never_delivered_while_the_sweep_is_behind(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.declare_queue("dlq")
    queue = vhost.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    )
    vhost.publish("", msg(b"old1", expiration_ms=100))
    vhost.publish("", msg(b"keep"))
    vhost.publish("", msg(b"old2", expiration_ms=100))
    vhost.publish("", msg(b"late", expiration_ms=60_000))
    clock.advance(1)  # past two deadlines, and no timer turn has run
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q", "c", no_ack=True)
    assert client.bodies() == [b"keep", b"late"]
    assert queue.stats.expired == 2
    assert queue.message_count == 0
    queue._check()
    assert get_all(broker, "dlq") == [b"old1", b"old2"]


def test_basic_get_skips_expired_heads_when_the_sweep_is_behind(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 10})
    for i in range(3 * EXPIRE_BATCH):
        vhost.publish("", msg(b"%d" % i))
    clock.advance(0.5)
    broker.fire_timers()  # one turn expires a batch; the rest wait for later turns
    assert queue.message_count == 2 * EXPIRE_BATCH
    assert get_all(broker, "q") == []
    assert queue.stats.expired == 3 * EXPIRE_BATCH
    assert not queue.deadlines  # the index lost the lazily expired ones too
    queue._check()


def test_ttl_zero_message_is_offered_at_publish_but_an_expired_backlog_is_not(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    queue = vhost.declare_queue("q")
    client = Client(broker)
    ch = client.channel()
    ch.prefetch_count = 1
    vhost.publish("", msg(b"first"))
    consume(broker, ch, "q", "c")
    vhost.publish("", msg(b"stale", expiration_ms=10))
    clock.advance(1)
    vhost.publish("", msg(b"zero", expiration_ms=0))  # no room: expires at once
    broker.ack(ch, 1, False)  # room again: the stale one is past its deadline
    assert client.bodies() == [b"first"]
    assert queue.stats.expired == 2
    vhost.publish("", msg(b"now", expiration_ms=0))
    assert client.bodies() == [b"first", b"now"]
    queue._check()


def test_mass_expiry_in_random_order_leaves_the_rest_in_order(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    rng = random.Random(5)
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 2})
    survivors: list[bytes] = []
    for i in range(6000):
        body = b"%d" % i
        if rng.random() < 0.1:
            vhost.publish("", msg(body))
            survivors.append(body)
        else:
            vhost.publish("", msg(body, expiration_ms=rng.randrange(1, 2000)))
    for _ in range(25):
        clock.advance(0.1)
        while (deadline := broker.next_deadline()) is not None and deadline <= clock.now:
            broker.fire_timers()
        queue._check()
    assert queue.stats.expired == 6000 - len(survivors)
    assert get_all(broker, "q") == survivors


def test_ttl_index_hands_out_due_entries_by_deadline_then_position() -> None:
    rng = random.Random(12)
    index = TtlIndex()
    entries = [QueueEntry(seq, msg(str(seq).encode())) for seq in range(200)]
    for entry in entries:
        assert isinstance(index.add(entry, float(rng.randrange(20))), bool)
    removed = entries[::7]
    for entry in removed:
        index.remove(entry)
    live = [e for e in entries if e not in removed]
    expected = sorted(live, key=lambda e: (e.expires_at, e.seq))
    assert index.next_deadline() == expected[0].expires_at
    got: list[QueueEntry] = []
    for now in (4.5, 9.0, 30.0):
        while (entry := index.pop_due(now)) is not None:
            assert entry.expires_at is not None
            assert entry.expires_at <= now
            got.append(entry)
        assert not index.has_due(now)
    assert got == expected
    assert len(index) == 0
    assert index.next_deadline() is None
