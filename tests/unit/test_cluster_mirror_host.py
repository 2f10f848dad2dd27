"""The mirror side (no sockets): logs written before acks, refusals, take-over contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqplite.cluster.link import (
    Ack,
    Append,
    QueueRef,
    Refuse,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
)
from amqplite.cluster.mirror_host import MirrorHost, live_messages
from amqplite.store.records import (
    encode_delivered,
    encode_delivered_once,
    encode_enqueue,
    encode_remove,
)

Q = QueueRef("/", "q")


def enqueue(seq: int, body: bytes) -> bytes:
    return encode_enqueue(seq, 0, 0, None, "", "q", b"", body)


def test_live_messages_apply_removes_and_delivery_counts() -> None:
    log = b"".join(
        [
            enqueue(1, b"a"),
            enqueue(2, b"b"),
            enqueue(3, b"c"),
            encode_remove(2),
            encode_delivered(3, 1),
        ]
    )
    assert [(m.seq, m.body, m.delivery_count) for m in live_messages(log)] == [
        (1, b"a", 0),
        (3, b"c", 1),
    ]


def test_a_batch_of_first_deliveries_marks_each_live_message_once() -> None:
    log = b"".join(
        [
            enqueue(1, b"a"),
            enqueue(2, b"b"),
            enqueue(3, b"c"),
            enqueue(4, b"d"),
            encode_delivered(4, 3),
            encode_remove(2),
            encode_delivered_once([1, 2, 4]),  # 2 is gone; 4 was delivered more than once
        ]
    )
    assert [(m.seq, m.delivery_count) for m in live_messages(log)] == [(1, 1), (3, 0), (4, 3)]


@pytest.mark.trio
async def test_appends_are_on_disk_when_acked_and_survive_a_new_host(tmp_path: Path) -> None:
    host = MirrorHost(tmp_path)
    replies = await host.handle([Append(Q, 1, 0, (enqueue(1, b"x"),))])
    assert replies == [Ack(Q, 1, 1)]
    replies = await host.handle([Append(Q, 1, 1, (enqueue(2, b"y"), encode_remove(1)))])
    assert replies == [Ack(Q, 1, 3)]
    assert [m.body for m in MirrorHost(tmp_path).messages_of(Q)] == [b"y"]


@pytest.mark.trio
async def test_a_snapshot_replaces_the_log_and_appends_follow_it(tmp_path: Path) -> None:
    host = MirrorHost(tmp_path)
    await host.handle([Append(Q, 1, 0, (enqueue(1, b"old"),))])
    replies = await host.handle(
        [
            SnapshotBegin(Q, 2, 10),
            SnapshotChunk(Q, 2, (enqueue(5, b"s1"),)),
            SnapshotChunk(Q, 2, (enqueue(6, b"s2"),)),
            SnapshotEnd(Q, 2, 10),
            Append(Q, 2, 10, (enqueue(7, b"t"),)),
        ]
    )
    assert replies == [Ack(Q, 2, 10), Ack(Q, 2, 11)]
    assert [m.body for m in host.messages_of(Q)] == [b"s1", b"s2", b"t"]


@pytest.mark.trio
async def test_a_lower_epoch_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    host = MirrorHost(tmp_path)
    await host.handle([Append(Q, 3, 0, (enqueue(1, b"x"),))])
    replies = await host.handle([Append(Q, 2, 1, (enqueue(2, b"stale"),)), SnapshotBegin(Q, 2, 0)])
    assert all(isinstance(r, Refuse) and r.epoch == 3 for r in replies)
    assert len(replies) == 2
    assert [m.body for m in host.messages_of(Q)] == [b"x"]


@pytest.mark.trio
async def test_a_new_leader_with_a_shorter_log_cuts_the_tail_on_disk(tmp_path: Path) -> None:
    host = MirrorHost(tmp_path)
    await host.handle([Append(Q, 1, 0, (enqueue(1, b"a"), enqueue(2, b"unconfirmed")))])
    replies = await host.handle([Append(Q, 2, 1, (enqueue(3, b"b"),))])
    assert replies == [Ack(Q, 2, 2)]
    assert [m.body for m in host.messages_of(Q)] == [b"a", b"b"]


@pytest.mark.trio
async def test_a_node_that_took_the_queue_over_refuses_the_old_leader(tmp_path: Path) -> None:
    host = MirrorHost(tmp_path)
    await host.handle([Append(Q, 1, 0, (enqueue(1, b"x"),))])
    host.lead(Q, 2)
    assert host.messages_of(Q) == []
    replies = await host.handle([Append(Q, 1, 1, (enqueue(2, b"late"),))])
    assert len(replies) == 1
    assert isinstance(replies[0], Refuse)
    assert replies[0].epoch == 2
    assert host.messages_of(Q) == []
