"""Commit domains: a queue whose commits are slow delays only its own confirms."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_store_commit_order import Frames

from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.message import Message
from amqplite.config.models import Config, StoreConfig
from amqplite.protocol.methods import BasicAck, spec
from amqplite.protocol.methods import build_method as build
from amqplite.server.committer import Committer, open_store
from amqplite.server.node import Node
from amqplite.server.restore import recover_into
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"


class StalledDomain:
    """A fault hook: the fsync of one commit domain does not return until released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._released = False
        self.stalled = 0

    def __call__(self, job: Any) -> None:
        if job.domain.name != self.name:
            return
        with self._cond:
            self.stalled += 1
            self._cond.notify_all()
            while not self._released:
                self._cond.wait()

    def release(self) -> None:
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def _wait_stalled(self) -> None:
        with self._cond:
            while not self.stalled:
                self._cond.wait()

    async def wait_stalled(self) -> None:
        await trio.to_thread.run_sync(self._wait_stalled, abandon_on_cancel=True)


async def confirming_client(node: Node, nursery: trio.Nursery, queue: str) -> Frames:
    """A connection whose channel 1 declared a durable queue and selected confirms."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(node.serve_stream, server_end, "memory")
    client = Frames(client_end)
    nursery.start_soon(client.read)
    await client.open()
    await client.send(1, build(spec.Queue.Declare, queue=queue, durable=True))
    await client.expect(spec.Queue.DeclareOk)
    await client.send(1, spec.Confirm.Select())
    await client.expect(spec.Confirm.SelectOk)
    return client


@pytest.mark.trio
async def test_a_stalled_queue_does_not_delay_confirms_of_another_queue(tmp_path: Path) -> None:
    stall = StalledDomain("//slow")
    config = Config(data_dir=str(tmp_path / "data"), store=StoreConfig())
    node = Node(config)
    committer = Committer(
        open_store(config, node.broker),
        lambda: list(node.broker.commit_waiters.values()),
        sync_hook=stall,
    )
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer.run)
                try:
                    slow = await confirming_client(node, nursery, "slow")
                    fast = await confirming_client(node, nursery, "fast")
                    await slow.publish(1, "slow", b"stuck")
                    await stall.wait_stalled()
                    for i in range(5):  # each fast confirm while the slow queue's fsync hangs
                        await fast.publish(1, "fast", b"m%d" % i)
                        ack = await fast.expect(BasicAck)
                        assert ack.delivery_tag == i + 1
                    await fast.send(1, build(spec.Queue.Declare, queue="new", durable=True))
                    await fast.expect(spec.Queue.DeclareOk)  # the metadata log is not held either
                    await slow.publish(1, "slow", b"behind the stalled one")
                    await trio.testing.wait_all_tasks_blocked()
                    assert slow.methods == []
                    stall.release()
                    acks = [await slow.expect(BasicAck)]
                    while acks[-1].delivery_tag < 2:
                        acks.append(await slow.expect(BasicAck))
                finally:
                    stall.release()
                    nursery.cancel_scope.cancel()
    finally:
        stall.release()
        committer.close()
    reopened = Broker()
    recover_into(reopened, Store(tmp_path / "data"))
    queues = reopened.vhost("/").queues
    assert queues["slow"].message_count == 2
    assert queues["fast"].message_count == 5


def test_a_mark_names_only_the_domains_its_records_went_to(tmp_path: Path) -> None:
    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path)
    recover_into(broker, store)
    vhost = broker.vhost("/")
    vhost.declare_queue("a", durable=True)
    vhost.declare_queue("b", durable=True)
    store.commit()
    commits = broker.commits

    def publish(queue: str) -> Any:
        outer = commits.watch()
        vhost.publish("", Message("", queue, PERSISTENT_PROPS, b"x", persistent=True))
        return commits.watched(outer)

    to_a, to_b = publish("a"), publish("b")
    assert [domain.name for domain, _ in to_a] == ["//a"]
    assert [domain.name for domain, _ in to_b] == ["//b"]
    jobs = {job.domain.name: job for job in store.flush()}
    assert sorted(jobs) == ["//a", "//b"]
    jobs["//b"].run()
    store.complete(jobs["//b"])
    assert is_durable(to_b)
    assert not is_durable(to_a)  # a's job has not run
    assert publish("a") is not None  # a's domain is busy: its next records wait for the next job
    assert [job.domain.name for job in store.flush()] == []
    jobs["//a"].run()
    store.complete(jobs["//a"])
    assert is_durable(to_a)
    assert [job.domain.name for job in store.flush()] == ["//a"]
    store.close()


def test_a_new_queue_waits_for_its_declaration_record(tmp_path: Path) -> None:
    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path)
    recover_into(broker, store)
    store.commit()
    vhost = broker.vhost("/")
    vhost.declare_queue("q", durable=True)  # its record is not committed yet
    commits = broker.commits
    outer = commits.watch()
    vhost.publish("", Message("", "q", PERSISTENT_PROPS, b"x", persistent=True))
    mark = commits.watched(outer)
    assert mark is not None
    assert sorted(domain.name for domain, _ in mark) == ["//q", "metadata"]
    jobs = {job.domain.name: job for job in store.flush()}
    jobs["//q"].run()
    store.complete(jobs["//q"])
    assert not is_durable(mark)  # a crash now would lose the queue, and the message with it
    jobs["metadata"].run()
    store.complete(jobs["metadata"])
    assert is_durable(mark)
    store.close()


def test_flush_writes_nothing_the_job_writes_in_the_worker_thread(tmp_path: Path) -> None:
    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path)
    recover_into(broker, store)
    vhost = broker.vhost("/")
    vhost.declare_queue("q", durable=True)
    store.commit()
    segments = sorted(tmp_path.glob("queues/*/*.seg"))
    sizes = [path.stat().st_size for path in segments]
    for i in range(20):  # the first goes to a new segment, the rest append
        vhost.publish("", Message("", "q", PERSISTENT_PROPS, b"m%d" % i, persistent=True))
    jobs = store.flush()  # on the event loop: decides where the bytes go, writes nothing
    assert sorted(tmp_path.glob("queues/*/*.seg")) == segments
    assert [path.stat().st_size for path in segments] == sizes
    for job in jobs:
        job.run()  # in the worker thread
        store.complete(job)
    assert sum(path.stat().st_size for path in tmp_path.glob("queues/*/*.seg")) > sum(sizes)
    store.close()


def test_the_last_descriptor_of_a_body_file_is_closed_by_a_job_not_on_the_loop(
    tmp_path: Path,
) -> None:
    import os

    from amqplite.store.bodies import BodyFile

    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path)
    recover_into(broker, store)
    broker.vhost("/").declare_queue("q", durable=True)
    path = tmp_path / "deleted-segment"
    path.write_bytes(b"x" * 4096)
    body_file = BodyFile(path, store.retired_fds)
    fd = body_file.fd
    path.unlink()
    del body_file  # the last paged message of a deleted segment went away
    os.fstat(fd)  # still open: closing it now would free the file's blocks on the event loop
    jobs = store.flush()
    assert store.retired_fds == []
    os.fstat(fd)
    for job in jobs:
        job.run()
        store.complete(job)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    store.close()


@pytest.mark.trio
async def test_records_flushed_just_before_shutdown_are_still_written(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"), store=StoreConfig())
    node = Node(config)
    committer = Committer(open_store(config, node.broker), lambda: [])
    vhost = node.broker.vhost("/")
    vhost.declare_queue("q", durable=True)
    store = committer.store
    flush = store.flush
    async with trio.open_nursery() as nursery:

        def flush_then_shut_down() -> Any:  # shutdown lands between a flush and its thread
            jobs = flush()
            if any(job.domain.name == "//q" for job in jobs):
                nursery.cancel_scope.cancel()
            return jobs

        store.flush = flush_then_shut_down  # type: ignore[method-assign]
        nursery.start_soon(committer.run)
        vhost.publish("", Message("", "q", PERSISTENT_PROPS, b"last", persistent=True))
    committer.close()
    domains = [journal.domain for journal in committer.store.journals.values()]
    assert [(d.committed, d.written, d.busy) for d in domains] == [(1, 1, False)]
    reopened = Broker()
    recover_into(reopened, Store(tmp_path / "data"))
    assert [e.message.body for e in reopened.vhost("/").queues["q"].ready] == [b"last"]
