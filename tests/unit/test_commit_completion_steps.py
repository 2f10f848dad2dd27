"""A commit's completion work (dropping paged-out bodies) runs in bounded steps, not all at once."""

from __future__ import annotations

from pathlib import Path

from store_helpers import recovered

from amqplite.broker.message import Message, PagedMessage
from amqplite.store.queue_store import FINISH_CHUNK

PERSISTENT = b"\x10\x00\x02"  # delivery-mode 2


def test_page_outs_of_a_large_commit_finish_a_chunk_per_step(tmp_path: Path) -> None:
    broker, store = recovered(tmp_path, fsync=False, memory_budget_bytes=1)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    count = 2 * FINISH_CHUNK + 7
    for n in range(count):
        broker.vhosts["/"].publish("", Message("", "q", PERSISTENT, b"%05d" % n, persistent=True))
    resident = store.resident_bytes
    for job in store.flush():
        job.run()
        store.complete(job, in_steps=True)

    def paged() -> int:
        return sum(isinstance(entry.message, PagedMessage) for entry in queue.ready)

    assert paged() == 0  # nothing dropped before the first step
    assert store.finish_step()
    assert paged() == FINISH_CHUNK
    assert store.resident_bytes == resident - 5 * FINISH_CHUNK
    assert store.finish_step()
    assert paged() == 2 * FINISH_CHUNK
    while store.finish_step():
        pass
    assert paged() == count
    assert [entry.message.body for entry in queue.ready] == [b"%05d" % n for n in range(count)]


def test_complete_without_steps_finishes_everything(tmp_path: Path) -> None:
    broker, store = recovered(tmp_path, fsync=False, memory_budget_bytes=1)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    for n in range(FINISH_CHUNK + 1):
        broker.vhosts["/"].publish("", Message("", "q", PERSISTENT, b"%05d" % n, persistent=True))
    for job in store.flush():
        job.run()
        store.complete(job)
    assert not store.finish_step()
    assert sum(isinstance(entry.message, PagedMessage) for entry in queue.ready) == FINISH_CHUNK + 1
