"""Paged bodies outside deliveries: the HTTP get reads them in a worker thread, never on the loop."""

from __future__ import annotations

import base64
import json

import pytest
import trio
import trio.testing
from test_management import make_app
from test_session_paged import WorkerOnlyBody

from amqplite.broker.message import Message, PagedMessage
from amqplite.management.http import HttpConnection, HttpLimits

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.mark.trio
async def test_http_get_reads_a_paged_body_in_a_worker_thread() -> None:
    app, _clock = make_app()
    vhost = app.broker.vhost("/")
    queue = vhost.declare_queue("q")
    body = WorkerOnlyBody(b"on disk")
    entry = queue.enqueue(Message("", "q", b"\x00\x00", b"on disk"))
    assert entry is not None
    entry.message = PagedMessage.of(entry.message, body)
    raw = json.dumps({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).encode()
    wire = (
        f"POST /api/queues/%2F/q/get HTTP/1.1\r\nhost: t\r\nauthorization: {AUTH}\r\n"
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
    assert head.startswith(b"HTTP/1.1 200"), received
    [got] = json.loads(answer)
    assert got["payload"] == "on disk"
    assert got["payload_bytes"] == 7
    assert body.reads == 1
    assert queue.message_count == 0  # ack_requeue_false took it
