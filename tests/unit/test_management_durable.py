"""HTTP requests that write durable records are answered only after the fsync that covers them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from test_store_commit_order import FsyncGate

from amqplite.broker.broker import Broker
from amqplite.config.models import Config, StoreConfig
from amqplite.management.http import HttpConnection, HttpLimits
from amqplite.management.resources import build_app
from amqplite.server.committer import Committer, open_store
from amqplite.server.node import Node
from amqplite.server.restore import recover_into
from amqplite.store.store import Store

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


@attrs.define
class Http:
    """One keep-alive HTTP client on a memory stream, its responses collected by a reader task."""

    stream: Any
    received: bytearray = attrs.field(factory=bytearray)
    arrived: trio.Event = attrs.field(factory=trio.Event)

    async def read(self) -> None:
        while data := await self.stream.receive_some(65536):
            self.received += data
            self.arrived.set()
            self.arrived = trio.Event()

    async def send(self, method: str, path: str, body: Any = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: {AUTH}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n"
        )
        await self.stream.send_all(head.encode() + raw)

    async def response(self) -> tuple[int, bytes]:
        """The next whole response: status and body."""
        while True:
            head, sep, rest = bytes(self.received).partition(b"\r\n\r\n")
            if sep:
                lines = head.decode().split("\r\n")
                length = next(
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length")
                )
                if len(rest) >= length:
                    del self.received[: len(head) + 4 + length]
                    return int(lines[0].split()[1]), rest[:length]
            await self.arrived.wait()


@asynccontextmanager
async def management_with_gate(data_dir: Path) -> AsyncIterator[tuple[Http, FsyncGate]]:
    """The management app of a node with a store whose commits pass the gate."""
    gate = FsyncGate()
    config = Config(data_dir=str(data_dir), store=StoreConfig())
    node = Node(config)
    committer = Committer(open_store(config, node.broker), lambda: [], sync_hook=gate)
    app = build_app(node, clock=trio.current_time, wall_clock=lambda: 1.7e9)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer.run)
                client_end, server_end = trio.testing.memory_stream_pair()
                connection = HttpConnection(
                    server_end, app.handle, HttpLimits(), committer.wait_durable
                )
                nursery.start_soon(connection.run)
                client = Http(client_end)
                nursery.start_soon(client.read)
                await committer.settle()  # the boot records
                try:
                    yield client, gate
                finally:
                    gate.open()
                    nursery.cancel_scope.cancel()
    finally:
        gate.open()
        committer.close()


async def held_until_the_fsync_returns(client: Http, gate: FsyncGate) -> tuple[int, bytes]:
    """Nothing is answered while the commit is stuck after its fsync; then the answer comes."""
    await gate.wait_held()
    await trio.testing.wait_all_tasks_blocked()
    assert client.received == b""
    passed = gate.passed
    gate.open()
    status, body = await client.response()
    assert gate.passed > passed
    gate.close()
    return status, body


def recovered_count(data_dir: Path, queue: str) -> int:
    broker = Broker()
    recover_into(broker, Store(data_dir))
    return broker.vhost("/").queues[queue].message_count


PERSISTENT = {"delivery_mode": 2}


@pytest.mark.trio
async def test_http_publish_is_answered_after_the_fsync_of_its_message(tmp_path: Path) -> None:
    async with management_with_gate(tmp_path / "data") as (client, gate):
        gate.close()
        await client.send("PUT", "/api/queues/%2F/dq", {"durable": True})
        status, _ = await held_until_the_fsync_returns(client, gate)
        assert status == 201
        publish = {"routing_key": "dq", "payload": "x", "payload_encoding": "string"}
        await client.send(
            "POST", "/api/exchanges/%2F/amq.default/publish", {**publish, "properties": PERSISTENT}
        )
        status, body = await held_until_the_fsync_returns(client, gate)
        assert (status, json.loads(body)) == (200, {"routed": True})
        assert recovered_count(tmp_path / "data", "dq") == 1


@pytest.mark.trio
async def test_sqs_send_is_answered_after_the_fsync_of_its_message(tmp_path: Path) -> None:
    async with management_with_gate(tmp_path / "data") as (client, gate):
        await client.send("PUT", "/api/queues/%2F/dq", {"durable": True})
        assert (await client.response())[0] == 201
        gate.close()
        await client.send(
            "POST", "/api/v1/queues/%2F/dq/messages", {"body": "x", "persistent": True}
        )
        status, _ = await held_until_the_fsync_returns(client, gate)
        assert status == 201
        assert recovered_count(tmp_path / "data", "dq") == 1


@pytest.mark.trio
async def test_http_purge_is_answered_after_the_fsync_of_its_removals(tmp_path: Path) -> None:
    async with management_with_gate(tmp_path / "data") as (client, gate):
        await client.send("PUT", "/api/queues/%2F/dq", {"durable": True})
        assert (await client.response())[0] == 201
        await client.send(
            "POST", "/api/v1/queues/%2F/dq/messages", {"body": "x", "persistent": True}
        )
        assert (await client.response())[0] == 201
        gate.close()
        await client.send("DELETE", "/api/queues/%2F/dq/contents")
        status, _ = await held_until_the_fsync_returns(client, gate)
        assert status == 204
        assert recovered_count(tmp_path / "data", "dq") == 0


@pytest.mark.trio
async def test_http_requests_that_write_nothing_are_answered_at_once(tmp_path: Path) -> None:
    async with management_with_gate(tmp_path / "data") as (client, gate):
        gate.close()
        await client.send("PUT", "/api/queues/%2F/tq", {"durable": False})
        assert (await client.response())[0] == 201
        publish = {"routing_key": "tq", "payload": "x", "payload_encoding": "string"}
        await client.send("POST", "/api/exchanges/%2F/amq.default/publish", publish)
        assert (await client.response())[0] == 200
        assert gate.held == 0
