"""Transient paging without sockets: bodies to unlinked spill files, read back, never left behind."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.queue import Queue
from amqplite.server.store_link import MessagePaging
from amqplite.store.bodies import close_descriptors
from amqplite.store.transient import ENTRY_OVERHEAD, TransientPager

MB = 2**20


def message(i: int, size: int = 1000) -> Message:
    return Message("", "q", b"\x00\x00", b"%06d" % i + bytes([i % 256]) * (size - 6))


def pager_at(tmp_path: Path, threshold: int) -> TransientPager:
    return TransientPager(tmp_path / "transient", threshold, MessagePaging())


def page(pager: TransientPager) -> int:
    """One batch written (as the worker thread would) and applied; bytes freed."""
    batch = pager.take()
    assert batch is not None
    batch.run()
    return pager.applied(batch)


def queued(queue: Queue, msg: Message) -> QueueEntry:
    entry = queue.enqueue(msg)
    assert entry is not None
    return entry


def test_bodies_beyond_the_threshold_page_out_and_read_back_intact(tmp_path: Path) -> None:
    pager = pager_at(tmp_path, threshold=50 * MB)
    pager.observe(50 * MB - 3 * (1000 + ENTRY_OVERHEAD))  # room for three more in memory
    queue = Queue("q", "/")
    entries = [queued(queue, message(i)) for i in range(10)]
    for entry in entries:
        pager.enqueue(entry)
    assert pager.pending_bytes == 7 * 1000  # the first three fit under the threshold
    assert page(pager) == 7000
    assert [type(e.message) for e in entries] == [Message] * 3 + [PagedMessage] * 7
    assert [e.message.body for e in entries] == [message(i).body for i in range(10)]
    assert list((tmp_path / "transient").iterdir()) == []  # unlinked: only descriptors hold it
    assert pager.paged_out == 7000


def test_an_entry_taken_or_replaced_meanwhile_keeps_its_body(tmp_path: Path) -> None:
    pager = pager_at(tmp_path, threshold=0)
    queue = Queue("q", "/")
    entries = [queued(queue, message(i)) for i in range(3)]
    for entry in entries:
        pager.enqueue(entry)
    batch = pager.take()
    assert batch is not None
    batch.run()
    taken = queue.take()  # delivered while the worker thread wrote: not ready any more
    assert taken is entries[0]
    entries[1].message = message(99)  # replaced (x-delivery-count) meanwhile
    assert pager.applied(batch) == 1000
    assert type(entries[0].message) is Message
    assert entries[1].message.body == message(99).body
    assert type(entries[2].message) is PagedMessage
    assert entries[2].message.body == message(2).body


def test_a_fanout_message_is_written_once_for_all_its_queues(tmp_path: Path) -> None:
    pager = pager_at(tmp_path, threshold=0)
    shared = message(7)
    queues = [Queue(f"q{n}", "/") for n in range(4)]
    entries = [queued(q, shared) for q in queues]
    for entry in entries:
        pager.enqueue(entry)
    page(pager)
    spill = pager.writable()
    assert spill.size == 1000  # one body on disk for four entries
    assert all(e.message.body == shared.body for e in entries)


def test_nothing_pages_under_the_threshold_or_twice(tmp_path: Path) -> None:
    pager = pager_at(tmp_path, threshold=100 * MB)
    pager.observe(10 * MB)
    queue = Queue("q", "/")
    entry = queued(queue, message(1))
    pager.enqueue(entry)
    assert pager.take() is None
    pager.threshold = 0
    pager.enqueue(entry)
    page(pager)
    pager.enqueue(entry)  # already paged (a requeue, a dead letter of it): stays as it is
    assert pager.take() is None


def test_spill_descriptors_close_once_their_bodies_are_gone(tmp_path: Path) -> None:
    pager = pager_at(tmp_path, threshold=0)
    queue = Queue("q", "/")
    for i in range(5):
        pager.enqueue(queued(queue, message(i)))
    page(pager)
    spill = pager.writable()
    pager.close()  # the write descriptor; readers keep the file
    reader_fd = spill.reader.fd
    os.fstat(reader_fd)
    del spill
    queue.purge()
    gc.collect()
    assert pager.has_retired
    retired = pager.take_retired()
    assert retired == [reader_fd]
    close_descriptors(retired)
    assert not pager.has_retired


def test_what_a_previous_run_left_is_dropped(tmp_path: Path) -> None:
    stale = tmp_path / "transient" / "00000001.spill"
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 100)
    pager_at(tmp_path, threshold=0)
    assert list(stale.parent.iterdir()) == []
