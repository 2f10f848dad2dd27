"""A queue whose recovery fails keeps its data: moved aside, logged by file, listed, never deleted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message
from amqplite.config.models import StoreConfig
from amqplite.server.restore import recover_into
from amqplite.store.records import RecordType
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"


def boot(directory: Path) -> tuple[Broker, Store]:
    return recovered(directory, fsync=False)


def publish(broker: Broker, queue: str, *bodies: bytes) -> None:
    for body in bodies:
        broker.vhosts["/"].publish("", Message("", queue, PERSISTENT_PROPS, body, persistent=True))


def files_holding(directory: Path, data: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and data in p.read_bytes()]


def test_queue_that_cannot_be_declared_at_boot_keeps_its_journal_after_a_redeclare(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, "q", b"precious-1", b"precious-2")
    record = store.metadata_log.queues[("/", "q")]
    # the same queue recorded with an argument this broker refuses (as after a stricter upgrade)
    store.metadata_log.append(
        RecordType.QUEUE, "/", "q", record.directory, False, {"x-max-priority": 100_000}
    )
    store.close()
    with caplog.at_level(logging.ERROR, logger="amqplite.store"):
        broker, store = boot(tmp_path)
    assert "q" not in broker.vhosts["/"].queues
    broker.vhosts["/"].declare_queue("q", durable=True)  # a client redeclares it, empty
    store.close()
    broker, store = boot(tmp_path)  # the boot that used to delete the old journal as an orphan
    assert broker.vhosts["/"].queues["q"].message_count == 0
    kept = files_holding(tmp_path, b"precious-2")
    assert kept, "the journal of the queue that was not restored was deleted"
    assert all("quarantine" in p.relative_to(tmp_path).parts for p in kept)
    assert any(
        record.directory in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    )
    (entry,) = store.quarantined()
    assert (entry.vhost, entry.name) == ("/", "q")
    assert "x-max-priority" in entry.reason
    assert entry.path.is_dir()
    assert store.statistics().quarantined == 1
    store.close()


def test_queue_whose_files_cannot_be_read_is_quarantined_and_the_others_come_back(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    broker.vhosts["/"].declare_queue("bad", durable=True)
    broker.vhosts["/"].declare_queue("good", durable=True)
    publish(broker, "bad", b"unreadable-but-kept")
    publish(broker, "good", b"fine")
    directory = store.queues_directory / store.metadata_log.queues[("/", "bad")].directory
    store.close()
    (directory / "0000009999.seg").mkdir()  # reading the queue's journal now raises
    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path, StoreConfig(fsync=False))
    report = recover_into(broker, store)
    assert (report.queues, report.messages, report.quarantined) == (1, 1, 1)
    assert [e.message.body for e in broker.vhosts["/"].queues["good"].ready] == [b"fine"]
    assert "bad" not in broker.vhosts["/"].queues
    (entry,) = store.quarantined()
    assert entry.name == "bad"
    assert not directory.exists()
    assert files_holding(entry.path, b"unreadable-but-kept")
    store.close()
    broker, store = boot(tmp_path)  # still kept, still listed, at the next boot
    assert [e.name for e in store.quarantined()] == ["bad"]
    assert files_holding(tmp_path / "quarantine", b"unreadable-but-kept")
    store.close()
