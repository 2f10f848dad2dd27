"""basic.get, queue.purge and declare-ok counts forwarded to a queue's leader, without sockets.

A follower's QueueProxy and a leader's LinkPeer on two real brokers (the `Pair` of
test_cluster_forwarding), messages encoded and decoded between them: a get takes the leader's
head and holds it there until the follower acks (gone), nacks (requeued there) or its asker
went; a purge empties the leader's queue; counts are the leader's, or local ones on a timeout.
"""

from __future__ import annotations

from queue_helpers import Client, FakeClock, msg
from test_cluster_forwarding import REF, Pair

from amqplite.cluster.link import Answer, AnswerStatus, Ask, AskOp, Resolve
from amqplite.cluster.queue_proxy import COUNT_TIMEOUT, FORWARD_TIMEOUT, RETRY_AFTER


def fill(pair: Pair, *bodies: bytes) -> None:
    for body in bodies:
        pair.led.enqueue(msg(body))


def test_a_forwarded_get_takes_the_leaders_head_and_an_ack_here_removes_it_there() -> None:
    pair = Pair(FakeClock())
    fill(pair, b"one", b"two")
    answer = pair.proxy.ask("get")
    assert not answer.done
    pair.round_trip()
    assert answer.done
    assert not answer.failed
    assert answer.entry is not None
    assert answer.entry.message.body == b"one"
    assert answer.messages == 1  # what is left there, as get-ok's message_count
    assert pair.led.unacked_count == 1  # held for this node until it settles
    channel = Client(pair.follower).channel()
    tag, _, redelivered = channel.took(pair.proxy.queue, answer.entry, no_ack=False)
    assert not redelivered
    pair.follower.ack(channel, tag, False)
    sent = pair.proxy.take_settled()
    assert sent == [Resolve(REF, 0, (1,), False)]
    for message in sent:
        pair.peer.received(message)
    assert pair.led.unacked_count == 0
    assert [e.message.body for e in pair.led.ready] == [b"two"]


def test_a_got_message_nacked_here_is_requeued_on_the_leader_as_redelivered() -> None:
    pair = Pair(FakeClock())
    fill(pair, b"one")
    answer = pair.proxy.ask("get")
    pair.round_trip()
    assert answer.entry is not None
    channel = Client(pair.follower).channel()
    tag, _, _ = channel.took(pair.proxy.queue, answer.entry, no_ack=False)
    pair.follower.reject(channel, tag, False, requeue=True)
    assert len(pair.proxy.queue.ready) == 0  # not kept here
    pair.to_leader()
    assert pair.led.unacked_count == 0
    assert [e.redelivered for e in pair.led.ready] == [True]
    again = pair.proxy.ask("get")
    pair.round_trip()
    assert again.entry is not None
    assert again.entry.redelivered


def test_a_get_of_an_empty_queue_and_a_get_without_ack() -> None:
    pair = Pair(FakeClock())
    empty = pair.proxy.ask("get")
    pair.round_trip()
    assert empty.done
    assert empty.entry is None
    assert not empty.failed
    fill(pair, b"x")
    no_ack = pair.proxy.ask("get-no-ack")
    pair.round_trip()
    assert no_ack.entry is not None
    assert no_ack.entry.message.body == b"x"
    assert pair.led.unacked_count == 0
    assert len(pair.led.ready) == 0


def test_a_message_got_for_an_asker_that_went_is_requeued_on_the_leader() -> None:
    pair = Pair(FakeClock())
    fill(pair, b"early", b"late")
    before = pair.proxy.ask("get")
    after = pair.proxy.ask("get")
    pair.to_leader()
    before.give_back()  # its channel closed before the answer came
    pair.to_follower()
    assert after.entry is not None
    assert after.entry.message.body == b"late"
    after.give_back()  # closed after the answer came, before the reply went out
    pair.to_leader()
    assert pair.led.unacked_count == 0
    assert sorted(e.message.body for e in pair.led.ready) == [b"early", b"late"]


def test_a_purge_empties_the_leaders_queue_and_counts_come_from_the_leader() -> None:
    pair = Pair(FakeClock())
    fill(pair, b"1", b"2", b"3")
    counts = pair.proxy.ask("count")
    pair.round_trip()
    assert (counts.messages, counts.consumers) == (3, 0)
    purge = pair.proxy.ask("purge")
    pair.round_trip()
    assert purge.done
    assert purge.messages == 3
    assert len(pair.led.ready) == 0


def test_the_link_ending_requeues_on_the_leader_what_the_follower_got() -> None:
    pair = Pair(FakeClock())
    fill(pair, b"one")
    answer = pair.proxy.ask("get")
    pair.round_trip()
    assert pair.led.unacked_count == 1
    pair.peer.close()
    pair.proxy.unlinked()
    assert pair.led.unacked_count == 0
    assert len(pair.led.ready) == 1
    assert answer.entry is not None
    channel = Client(pair.follower).channel()
    tag, _, _ = channel.took(pair.proxy.queue, answer.entry, no_ack=False)
    pair.follower.reject(channel, tag, False, requeue=True)  # not kept here, nothing sent
    assert len(pair.proxy.queue.ready) == 0
    assert pair.proxy.take_settled() == []


def test_asks_a_node_did_not_answer_go_again_then_fail_or_count_locally() -> None:
    clock = FakeClock()
    pair = Pair(clock, leads=False)
    get = pair.proxy.ask("get")
    count = pair.proxy.ask("count")
    pair.to_leader()
    answers = pair.peer.take()
    assert all(isinstance(a, Answer) and a.status == AnswerStatus.NOT_LEADING for a in answers)
    for answer in answers:
        pair.proxy.received(answer)
    assert not get.done
    assert not count.done
    clock.advance(RETRY_AFTER)
    pair.proxy.tick(clock())
    sent = pair.proxy.take_settled()
    assert sorted(m.op for m in sent if isinstance(m, Ask)) == [AskOp.GET, AskOp.COUNT]
    clock.advance(COUNT_TIMEOUT)
    pair.proxy.tick(clock())
    assert count.done
    assert not count.failed
    assert count.messages == 0
    assert not get.done
    clock.advance(FORWARD_TIMEOUT)
    pair.proxy.tick(clock())
    assert get.done
    assert "no leader answered" in get.failed
