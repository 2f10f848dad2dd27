"""The store on its own: records, segments, torn tails, corruption, snapshots, empty and missing files."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.store.journal import list_segments
from amqplite.store.records import (
    FILE_HEADER,
    RECORD_HEAD,
    RecordType,
    append_enqueue,
    decode_enqueue,
    encode_enqueue,
    encode_remove,
    frame,
    scan,
)
from amqplite.store.recovery import recover_queue
from amqplite.store.snapshot import STEPS, SnapshotInterrupted, write_snapshot

PERSISTENT_PROPS = b"\x10\x00\x02"  # flags: delivery_mode, value 2


def message(body: bytes, persistent: bool = True) -> Message:
    return Message(
        "", "q", PERSISTENT_PROPS if persistent else b"\x00\x00", body, persistent=persistent
    )


boot = recovered


def queue_of(broker: Broker, name: str = "q") -> Queue:
    return broker.vhosts["/"].queues[name]


def bodies(queue: Queue) -> list[bytes]:
    return [entry.message.body for entry in queue.ready]


def publish(broker: Broker, count: int, start: int = 0, persistent: bool = True) -> None:
    vhost = broker.vhosts["/"]
    for i in range(start, start + count):
        vhost.publish("", message(b"m%d" % i, persistent))


def take_and_ack(queue: Queue, count: int) -> None:
    for _ in range(count):
        entry = queue.take()
        assert entry is not None
        entry.delivery_count += 1
        queue.settle(entry)


def only_queue_dir(directory: Path) -> Path:
    (path,) = list((directory / "queues").iterdir())
    return path


# -- records -------------------------------------------------------------------------------


def test_enqueue_record_round_trips_every_field() -> None:
    record = encode_enqueue(7, 2, 5, 1500, "ex", "rk.é", b"\x10\x00\x02", b"body" * 100)
    result = scan(record, 0)
    assert result.problem is None
    ((record_type, payload, offset),) = result.records
    assert (record_type, offset) == (RecordType.ENQUEUE, 0)
    stored = decode_enqueue(payload)
    assert (stored.seq, stored.delivery_count, stored.priority, stored.expiration_ms) == (
        7,
        2,
        5,
        1500,
    )
    assert (stored.exchange, stored.routing_key, stored.body) == ("ex", "rk.é", b"body" * 100)


def test_scan_stops_at_a_flipped_bit_and_reports_its_offset() -> None:
    data = bytearray(encode_remove(1) + encode_remove(2) + encode_remove(3))
    second = len(encode_remove(1))
    data[second + 9] ^= 0x01
    result = scan(bytes(data), 0)
    assert [r[0] for r in result.records] == [RecordType.REMOVE]
    assert result.end == second
    assert result.problem == "checksum mismatch"


def test_scan_of_a_partial_record_says_torn_not_corrupt() -> None:
    record = encode_remove(9)
    result = scan(record + record[:5], 0)
    assert len(result.records) == 1
    assert result.problem is not None
    assert result.problem.startswith("torn")


# -- queue journal: recovery ---------------------------------------------------------------


def test_persistent_messages_of_a_durable_queue_come_back_in_order(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 10)
    take_and_ack(queue_of(broker), 3)
    store.close()
    broker, store = boot(tmp_path)
    assert bodies(queue_of(broker)) == [b"m%d" % i for i in range(3, 10)]
    assert not any(e.redelivered for e in queue_of(broker).ready)


def test_transient_messages_and_non_durable_queues_are_not_kept(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True)
    vhost.declare_queue("t", durable=False)
    vhost.declare_queue("x", durable=True, exclusive=True, owner=object())
    publish(broker, 2, persistent=False)
    publish(broker, 1, start=2)
    vhost.publish("", Message("", "t", PERSISTENT_PROPS, b"t", persistent=True))
    store.close()
    broker, store = boot(tmp_path)
    assert set(broker.vhosts["/"].queues) == {"q"}
    assert bodies(queue_of(broker)) == [b"m2"]


def test_durable_exchanges_and_bindings_come_back_and_deleted_ones_do_not(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("logs", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    vhost.declare_exchange("gone", "fanout", durable=True)
    vhost.declare_exchange("temp", "fanout", durable=False)
    vhost.declare_queue("q", durable=True)
    vhost.bind("logs", Destination("queue", "q"), "a.*", {"x-k": 1})
    vhost.bind("gone", Destination("queue", "q"), "")
    vhost.bind("temp", Destination("queue", "q"), "")
    vhost.delete_exchange("gone")
    store.close()
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    assert "logs" in vhost.exchanges
    assert "gone" not in vhost.exchanges
    assert "temp" not in vhost.exchanges
    assert vhost.exchanges["logs"].arguments == {"alternate-exchange": "ae"}
    assert [(b.source, b.routing_key, b.arguments) for b in vhost.bindings()] == [
        ("logs", "a.*", {"x-k": 1})
    ]


def test_deleted_queue_leaves_no_files_and_does_not_come_back(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 5)
    store.commit()
    assert list((tmp_path / "queues").iterdir())
    broker.vhosts["/"].delete_queue("q")
    store.commit()
    assert list((tmp_path / "queues").iterdir()) == []
    store.close()
    broker, _ = boot(tmp_path)
    assert "q" not in broker.vhosts["/"].queues


def test_unacked_messages_come_back_redelivered_in_their_order_after_a_clean_stop(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 6)
    queue = queue_of(broker)
    for _ in range(3):  # delivered, never acked (the consumer's connection is still open)
        entry = queue.take()
        assert entry is not None
        entry.delivery_count += 1
    store.close()
    broker, _ = boot(tmp_path)
    entries = list(queue_of(broker).ready)
    assert [e.message.body for e in entries] == [b"m%d" % i for i in range(6)]
    assert [e.redelivered for e in entries] == [True, True, True, False, False, False]


def test_after_a_crash_every_recovered_message_is_marked_redelivered(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 3)
    store.commit()  # durable, then the process dies without close()
    broker, after = boot(tmp_path)
    assert after.crashed is True
    entries = list(queue_of(broker).ready)
    assert [e.message.body for e in entries] == [b"m0", b"m1", b"m2"]
    assert all(e.redelivered for e in entries)


def test_new_messages_after_recovery_get_fresh_sequence_numbers(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 4)
    take_and_ack(queue_of(broker), 4)
    publish(broker, 2, start=4)
    store.close()
    broker, store = boot(tmp_path)
    publish(broker, 2, start=6)
    take_and_ack(queue_of(broker), 1)
    store.close()
    broker, _ = boot(tmp_path)
    assert bodies(queue_of(broker)) == [b"m5", b"m6", b"m7"]


def test_confirm_ticket_is_committed_only_after_the_commit(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    store.commit()
    outer = broker.commits.watch()
    publish(broker, 1)
    mark = broker.commits.watched(outer)
    assert mark is not None
    assert not is_durable(mark)
    store.commit()
    assert is_durable(mark)


def test_torn_tail_is_cut_at_its_offset_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 3)
    store.commit()
    (_number, segment) = list_segments(only_queue_dir(tmp_path))[-1]
    good_size = segment.stat().st_size
    with open(segment, "ab") as file:  # a partial write: half of a fourth record
        file.write(encode_enqueue(99, 0, 0, None, "", "q", b"", b"x" * 100)[:50])
    with caplog.at_level(logging.WARNING, "amqplite.store"):
        broker, _ = boot(tmp_path)
    assert bodies(queue_of(broker)) == [b"m0", b"m1", b"m2"]
    assert segment.stat().st_size == good_size
    assert f"at offset {good_size}; cut off 50 bytes" in caplog.text


def test_corrupt_record_in_the_middle_stops_recovery_there_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, store = boot(tmp_path, segment_bytes=4096, snapshot_ratio=1000.0)
    broker.vhosts["/"].declare_queue("q", durable=True)
    for i in range(6):  # several segments
        publish(broker, 20, start=20 * i)
        store.commit()
    segments = list_segments(only_queue_dir(tmp_path))
    assert len(segments) >= 2
    _, first = segments[0]
    data = bytearray(first.read_bytes())
    records = scan(bytes(data), FILE_HEADER.size).records
    bad_offset = records[5][2]
    data[bad_offset + 12] ^= 0xFF  # inside the payload of the sixth record
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "amqplite.store"):
        broker, _ = boot(tmp_path)
    assert bodies(queue_of(broker)) == [b"m%d" % i for i in range(5)]
    assert f"checksum mismatch at offset {bad_offset}" in caplog.text
    assert "recovery of this queue stops here" in caplog.text
    assert [n for n, _ in list_segments(only_queue_dir(tmp_path))] == [segments[0][0]]


def test_missing_data_directory_and_missing_queue_directory_are_empty(tmp_path: Path) -> None:
    broker, store = boot(tmp_path / "fresh")
    assert store.crashed is False
    broker.vhosts["/"].declare_queue("q", durable=True)
    store.close()  # no message was ever journaled: the queue has no directory at all
    broker, _ = boot(tmp_path / "fresh")
    assert queue_of(broker).message_count == 0
    assert recover_queue(tmp_path / "nowhere").messages == []


def test_empty_segment_and_empty_metadata_files_are_ignored(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 2)
    store.commit()  # then the crash: no clean shutdown
    directory = only_queue_dir(tmp_path)
    last = list_segments(directory)[-1][0]
    (directory / f"{last + 1:010d}.seg").write_bytes(b"")  # created, then the crash
    broker, store = boot(tmp_path)
    assert bodies(queue_of(broker)) == [b"m0", b"m1"]
    store.close()
    empty = tmp_path / "other"
    empty.mkdir()
    (empty / "metadata.log").write_bytes(b"")
    broker, store = boot(empty)
    assert store.problems == []
    assert broker.vhosts["/"].queues == {}


# -- snapshots -----------------------------------------------------------------------------


def test_snapshots_keep_disk_use_following_live_data(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, segment_bytes=8192)
    broker.vhosts["/"].declare_queue("q", durable=True)
    queue = queue_of(broker)
    for i in range(100):  # 2,000 messages of 1 KB published and acked, 20 live at each commit
        vhost = broker.vhosts["/"]
        for j in range(20):
            vhost.publish("", message(b"%06d" % (20 * i + j) + b"x" * 1018))
        take_and_ack(queue, 20 if i < 99 else 10)
        store.commit()
    on_disk = sum(p.stat().st_size for p in only_queue_dir(tmp_path).iterdir())
    assert on_disk < 4 * 8192
    assert store.journals[("/", "q")].snapshots_taken > 10
    store.close()
    broker, _ = boot(tmp_path)
    assert [b[:6] for b in bodies(queue_of(broker))] == [b"%06d" % i for i in range(1990, 2000)]


@pytest.mark.parametrize("step", STEPS)
def test_snapshot_interrupted_after_each_step_loses_and_duplicates_nothing(
    tmp_path: Path, step: str
) -> None:
    broker, store = boot(tmp_path, segment_bytes=4096, snapshot_ratio=1000.0)
    broker.vhosts["/"].declare_queue("q", durable=True)
    rng = random.Random(7)
    queue = queue_of(broker)
    for i in range(5):
        publish(broker, 15, start=15 * i)
        take_and_ack(queue, rng.randrange(10))
        store.commit()
    expected = bodies(queue)
    journal = store.journals[("/", "q")]
    covers = journal.writer.number
    store.commit()  # then a crash in the middle of the next snapshot
    items = [
        encode_enqueue(
            seq, e.delivery_count, 0, None, "", "q", e.message.properties_bin, e.message.body
        )
        for seq, e in journal.live.items()
    ]
    directory = only_queue_dir(tmp_path)
    with pytest.raises(SnapshotInterrupted):
        write_snapshot(directory, covers, items, stop_after=step)
    broker, store = boot(tmp_path)
    assert bodies(queue_of(broker)) == expected
    publish(broker, 1, start=1000)
    store.close()
    broker, _ = boot(tmp_path)
    assert bodies(queue_of(broker)) == [*expected, b"m1000"]


def test_an_enqueue_appended_in_place_is_the_record_framed_over_its_whole_payload() -> None:
    """The chained crc32 of append_enqueue equals the crc32 of the joined record: scan accepts it."""
    body = bytes(range(256)) * 40
    buffer = bytearray(b"earlier")
    size = append_enqueue(buffer, 7, 2, 5, 1500, "ex", "rk.\udcff", b"\x10\x00\x02", body)
    record = bytes(buffer[len(b"earlier") :])
    assert size == len(record)
    payload = record[RECORD_HEAD.size + 1 :]
    assert record == frame(RecordType.ENQUEUE, payload)
    decoded = decode_enqueue(memoryview(payload))
    assert (decoded.seq, decoded.routing_key, bytes(decoded.body)) == (7, "rk.\udcff", body)


def test_delivery_counts_journaled_before_a_crash_come_back(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 4)
    queue = queue_of(broker)
    store.commit()
    taken = []
    for _ in range(3):  # m0, m1, m2 handed out once (a consumer that never acks)
        entry = queue.take()
        assert entry is not None
        entry.delivery_count += 1
        taken.append(entry)
    store.commit()
    queue.requeue(taken[0])  # m0 again: handed out twice
    entry = queue.take()
    assert entry is taken[0]
    entry.delivery_count += 1
    store.commit()  # durable, then the process dies without close()
    broker, after = boot(tmp_path)
    assert after.crashed is True
    entries = sorted(queue_of(broker).ready, key=lambda e: e.message.body)
    assert [e.message.body for e in entries] == [b"m0", b"m1", b"m2", b"m3"]
    assert [e.delivery_count for e in entries] == [2, 1, 1, 1]  # after a crash: at least 1
