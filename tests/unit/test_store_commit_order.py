"""Nothing durable is announced before the fsync that covers it returns (confirms, -oks)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from amqplite.config.models import Config, StoreConfig
from amqplite.protocol import encode_content, encode_method
from amqplite.protocol.constants import PROTOCOL_HEADER
from amqplite.protocol.frames import NEED_DATA, FrameReader, MethodFrame, ProtocolHeaderReceived
from amqplite.protocol.methods import BasicAck, spec
from amqplite.protocol.methods import build_method as build
from amqplite.server.committer import Committer, open_store
from amqplite.server.node import Node

PERSISTENT_PROPS = b"\x10\x00\x02"


class FsyncGate:
    """A committer hook: while closed, a commit's fsync does not return (to the event loop)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self.held = 0  # commits waiting at the gate now
        self.passed = 0  # commits whose fsync has returned

    def __call__(self, job: Any) -> None:
        """Runs in the worker thread right after the job's fsyncs."""
        with self._cond:
            self.held += 1
            self._cond.notify_all()
            while not self._open:
                self._cond.wait()
            self.held -= 1
            self.passed += 1

    def close(self) -> None:
        with self._cond:
            self._open = False

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def _wait_held(self) -> None:
        with self._cond:
            while not self.held:
                self._cond.wait()

    async def wait_held(self) -> None:
        """Until a commit is stuck at the gate (its records written and fsynced, not reported)."""
        await trio.to_thread.run_sync(self._wait_held, abandon_on_cancel=True)


@attrs.define
class Frames:
    """Every method frame the broker sent on a memory stream, collected by a reader task."""

    stream: Any
    methods: list[Any] = attrs.field(factory=list)
    arrived: trio.Event = attrs.field(factory=trio.Event)

    async def read(self) -> None:
        reader = FrameReader(1 << 20)
        reader.receive_data(PROTOCOL_HEADER)  # a server never sends one: prime the reader past it
        assert isinstance(reader.next_frame(), ProtocolHeaderReceived)
        while data := await self.stream.receive_some(65536):
            reader.receive_data(data)
            while (frame := reader.next_frame()) is not NEED_DATA:
                if isinstance(frame, MethodFrame):
                    self.methods.append(frame.method)
                    self.arrived.set()
                    self.arrived = trio.Event()

    async def expect(self, cls: type) -> Any:
        """The next method, which must be a cls."""
        while not self.methods:
            await self.arrived.wait()
        method = self.methods.pop(0)
        assert isinstance(method, cls), method
        return method

    async def send(self, channel: int, method: Any) -> None:
        await self.stream.send_all(encode_method(channel, method))

    async def publish(self, channel: int, queue: str, body: bytes) -> None:
        frames = encode_method(channel, spec.Basic.Publish(exchange="", routing_key=queue))
        frames += encode_content(channel, 60, PERSISTENT_PROPS, body, 131072)
        await self.stream.send_all(frames)

    async def open(self) -> None:
        await self.stream.send_all(PROTOCOL_HEADER)
        await self.expect(spec.Connection.Start)
        await self.send(
            0, build(spec.Connection.StartOk, mechanism="PLAIN", response="\x00guest\x00guest")
        )
        await self.expect(spec.Connection.Tune)
        await self.send(
            0, build(spec.Connection.TuneOk, channel_max=0, frame_max=131072, heartbeat=0)
        )
        await self.send(0, build(spec.Connection.Open, virtual_host="/"))
        await self.expect(spec.Connection.OpenOk)
        await self.send(1, spec.Channel.Open())
        await self.expect(spec.Channel.OpenOk)


@asynccontextmanager
async def broker_with_gate(data_dir: Path) -> AsyncIterator[tuple[Frames, FsyncGate]]:
    """A node with a store whose commits pass the gate, and one open client channel."""
    gate = FsyncGate()
    config = Config(data_dir=str(data_dir), store=StoreConfig())
    node = Node(config)
    committer = Committer(
        open_store(config, node.broker),
        lambda: list(node.broker.commit_waiters.values()),
        sync_hook=gate,
    )
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer.run)
                client_end, server_end = trio.testing.memory_stream_pair()
                nursery.start_soon(node.serve_stream, server_end, "memory")
                client = Frames(client_end)
                nursery.start_soon(client.read)
                await client.open()
                await committer.settle()  # the boot records
                try:
                    yield client, gate
                finally:
                    gate.open()  # a held commit would keep the nursery from ending
                    nursery.cancel_scope.cancel()
    finally:
        gate.open()
        committer.close()


async def assert_held_until_the_fsync_returns(client: Frames, gate: FsyncGate) -> None:
    """The commit is stuck after its fsync: nothing may have been sent; then let it return."""
    await gate.wait_held()
    await trio.testing.wait_all_tasks_blocked()
    assert client.methods == []
    passed = gate.passed
    gate.open()
    while gate.passed == passed:  # the reply may only come after this commit's fsync returned
        await client.arrived.wait()
        assert gate.passed > passed, client.methods
    gate.close()


@pytest.mark.trio
async def test_durable_declare_ok_leaves_only_after_its_fsync_returns(tmp_path: Path) -> None:
    async with broker_with_gate(tmp_path / "data") as (client, gate):
        gate.close()
        await client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
        await assert_held_until_the_fsync_returns(client, gate)
        await client.expect(spec.Queue.DeclareOk)
        await client.send(
            1, build(spec.Exchange.Declare, exchange="dx", exchange_type="direct", durable=True)
        )
        await assert_held_until_the_fsync_returns(client, gate)
        await client.expect(spec.Exchange.DeclareOk)


@pytest.mark.trio
async def test_publisher_confirm_leaves_only_after_its_fsync_returns(tmp_path: Path) -> None:
    async with broker_with_gate(tmp_path / "data") as (client, gate):
        await client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
        await client.expect(spec.Queue.DeclareOk)
        await client.send(1, spec.Confirm.Select())
        await client.expect(spec.Confirm.SelectOk)
        gate.close()
        for i in range(3):
            await client.publish(1, "dq", b"m%d" % i)
            await assert_held_until_the_fsync_returns(client, gate)
            ack = await client.expect(BasicAck)
            assert ack.delivery_tag == i + 1


@pytest.mark.trio
async def test_tx_commit_ok_leaves_only_after_its_fsync_returns(tmp_path: Path) -> None:
    async with broker_with_gate(tmp_path / "data") as (client, gate):
        await client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
        await client.expect(spec.Queue.DeclareOk)
        await client.send(1, spec.Tx.Select())
        await client.expect(spec.Tx.SelectOk)
        gate.close()
        await client.publish(1, "dq", b"in a transaction")
        await trio.testing.wait_all_tasks_blocked()
        assert gate.held == 0  # a publish inside a transaction writes nothing before tx.commit
        await client.send(1, spec.Tx.Commit())
        await assert_held_until_the_fsync_returns(client, gate)
        await client.expect(spec.Tx.CommitOk)
