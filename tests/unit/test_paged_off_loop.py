"""Paged bodies outside deliveries: HTTP get and dead-lettering never read them on the event loop."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from store_helpers import recovered
from test_management import make_app
from test_session_paged import WorkerOnlyBody

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage
from amqplite.broker.queue import Queue
from amqplite.management.http import HttpConnection, HttpLimits
from amqplite.store.store import Store

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


async def http_exchange(app: Any, method: str, path: str, body: Any = None) -> tuple[bytes, Any]:
    """One request on a memory stream to the management app: the status line and the JSON."""
    raw = b"" if body is None else json.dumps(body).encode()
    wire = (
        f"{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: {AUTH}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + raw
    client, server = trio.testing.memory_stream_pair()
    received = b""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(HttpConnection(server, app.handle, HttpLimits()).run)
            await client.send_all(wire)
            while data := await client.receive_some(65536):
                received += data
    head, _, answer = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(answer)


def paged_queue(app: Any, data: bytes) -> tuple[Queue, WorkerOnlyBody]:
    """Queue q holding one message whose body is paged out (readable off the loop only)."""
    queue = app.broker.vhost("/").declare_queue("q")
    body = WorkerOnlyBody(data)
    entry = queue.enqueue(Message("", "q", b"\x00\x00", data))
    assert entry is not None
    entry.message = PagedMessage.of(entry.message, body)
    return queue, body


@pytest.mark.trio
async def test_http_get_reads_a_paged_body_in_a_worker_thread() -> None:
    app, _clock = make_app()
    queue, body = paged_queue(app, b"on disk")
    request = {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}
    status, answer = await http_exchange(app, "POST", "/api/queues/%2F/q/get", request)
    assert status == b"HTTP/1.1 200 OK", answer
    [got] = answer
    assert got["payload"] == "on disk"
    assert got["payload_bytes"] == 7
    assert body.reads == 1
    assert queue.message_count == 0  # ack_requeue_false took it


@pytest.mark.trio
async def test_sqs_receive_reads_a_paged_body_in_a_worker_thread() -> None:
    app, _clock = make_app()
    _queue, body = paged_queue(app, b"received from disk")
    status, answer = await http_exchange(app, "GET", "/api/v1/queues/%2F/q/messages")
    assert status == b"HTTP/1.1 200 OK", answer
    [got] = answer["messages"]
    assert got["body"] == "received from disk"
    assert body.reads == 1


PERSISTENT = b"\x10\x00\x02"  # delivery_mode 2


def boot(directory: Path, budget: int = 1 << 30) -> tuple[Broker, Store]:
    return recovered(directory, fsync=False, memory_budget_bytes=budget)


def reject_paged(broker: Broker, body: WorkerOnlyBody, durable_target: bool) -> Queue:
    """Queue src dead-letters to dst; its one message, paged out, is rejected."""
    vhost = broker.vhosts["/"]
    target = vhost.declare_queue("dst", durable=durable_target)
    source = vhost.declare_queue(
        "src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dst"}
    )
    vhost.publish("", Message("", "src", PERSISTENT, body.data, persistent=True))
    entry = source.take()
    assert entry is not None
    entry.message = PagedMessage.of(entry.message, body)
    source.reject(entry)
    return target


def test_dead_lettering_a_paged_message_keeps_it_paged_and_reads_nothing() -> None:
    broker = Broker()
    broker.add_vhost("/")
    body = WorkerOnlyBody(b"paged, rejected")
    target = reject_paged(broker, body, durable_target=False)
    [entry] = list(target.ready)
    assert isinstance(entry.message, PagedMessage)
    assert entry.message.location is body  # the same body on disk, shared
    assert entry.message.routing_key == "dst"
    assert entry.message.headers is not None
    assert entry.message.headers["x-death"]
    assert body.reads == 0


def test_a_durable_queue_journals_a_dead_lettered_paged_body_in_the_worker_thread(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    body = WorkerOnlyBody(b"paged, then journaled")
    target = reject_paged(broker, body, durable_target=True)
    [entry] = list(target.ready)
    assert isinstance(entry.message, PagedMessage)  # stays paged in the target
    assert body.reads == 0
    for job in store.flush():  # what the committer does: the job runs in its worker thread
        worker = threading.Thread(target=job.run)
        worker.start()
        worker.join()
        store.complete(job)
    assert body.reads == 1
    crashed, _store = boot(tmp_path)  # no clean close: recovery replays the journal
    [recovered] = list(crashed.vhosts["/"].queues["dst"].ready)
    assert recovered.message.body == b"paged, then journaled"
    assert recovered.message.routing_key == "dst"


def test_a_body_paged_out_after_a_late_record_is_read_back_from_the_right_place(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path, budget=10)
    body = WorkerOnlyBody(b"dead-lettered first")
    target = reject_paged(broker, body, durable_target=True)
    vhost = broker.vhosts["/"]
    vhost.publish("", Message("", "dst", PERSISTENT, b"x" * 100, persistent=True))
    for job in store.flush():
        worker = threading.Thread(target=job.run)
        worker.start()
        worker.join()
        store.complete(job)
    _first, second = list(target.ready)
    assert isinstance(second.message, PagedMessage)  # over the budget: paged out after the write
    assert second.message.location.read() == b"x" * 100


def test_a_paged_message_requeued_under_a_delivery_limit_stays_paged_and_unread() -> None:
    broker = Broker()
    broker.add_vhost("/")
    queue = broker.vhosts["/"].declare_queue("q", arguments={"x-delivery-limit": 5})
    body = WorkerOnlyBody(b"counted")
    queue.enqueue(Message("", "q", b"\x00\x00", b"counted"))
    entry = queue.take()
    assert entry is not None
    entry.message = PagedMessage.of(entry.message, body)
    entry.delivery_count += 1
    queue.requeue(entry)  # x-delivery-count is rewritten in the properties, not in the body
    [ready] = list(queue.ready)
    assert isinstance(ready.message, PagedMessage)
    assert ready.message.location is body
    assert ready.message.headers == {"x-delivery-count": 1}
    assert body.reads == 0
