"""Group commit on trio: confirms for persistent messages go out after the commit that covers them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from amqplite.broker.broker import Broker
from amqplite.config.models import Config, StoreConfig
from amqplite.protocol import encode_content, encode_method
from amqplite.protocol.constants import PROTOCOL_HEADER
from amqplite.protocol.frames import (
    NEED_DATA,
    FrameReader,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
)
from amqplite.protocol.methods import BasicAck, spec
from amqplite.protocol.methods import build_method as build
from amqplite.server.committer import Committer, open_store
from amqplite.server.node import Node
from amqplite.server.restore import recover_into
from amqplite.store.records import FILE_HEADER, RecordType, scan
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"


def enqueues_on_disk(data_dir: Path) -> int:
    """ENQUEUE records in the journal segments under data_dir."""
    count = 0
    for path in data_dir.glob("queues/*/*.seg"):
        records = scan(path.read_bytes(), FILE_HEADER.size).records
        count += sum(1 for record_type, _, _ in records if record_type == RecordType.ENQUEUE)
    return count


class Client:
    """A minimal AMQP client on a memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = FrameReader(1 << 20)
        self.reader.receive_data(PROTOCOL_HEADER)
        assert isinstance(self.reader.next_frame(), ProtocolHeaderReceived)

    async def send(self, channel: int, method: Any) -> None:
        await self.stream.send_all(encode_method(channel, method))

    async def expect(self, cls: type) -> Any:
        while True:
            while (frame := self.reader.next_frame()) is NEED_DATA:
                self.reader.receive_data(await self.stream.receive_some(65536))
            if not isinstance(frame, HeartbeatFrame):
                break
        assert isinstance(frame, MethodFrame), frame
        assert isinstance(frame.method, cls), frame.method
        return frame.method

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


@pytest.mark.trio
async def test_confirms_of_persistent_messages_follow_the_group_commit(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"), store=StoreConfig())
    node = Node(config)
    store = open_store(config, node.broker)
    committer = Committer(store, lambda: list(node.broker.commit_waiters.values()))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer.run)
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(node.serve_stream, server_end, "memory")
            client = Client(client_end)
            await client.open()
            await client.send(1, spec.Confirm.Select())
            await client.expect(spec.Confirm.SelectOk)
            await client.send(1, spec.Queue.Declare(queue="jobs", durable=True))
            await client.expect(spec.Queue.DeclareOk)
            data = b"".join(
                encode_method(1, spec.Basic.Publish(exchange="", routing_key="jobs"))
                + encode_content(1, 60, PERSISTENT_PROPS, b"job %d" % i, 131072)
                for i in range(50)
            )
            await client.stream.send_all(data)
            confirmed = 0
            while confirmed < 50:
                ack = await client.expect(BasicAck)
                confirmed = ack.delivery_tag
                # the confirmed messages are in the journal files when their ack arrives
                assert enqueues_on_disk(tmp_path / "data") >= confirmed
            assert 1 <= store.statistics().commits < 50  # group commit, not one per message
            nursery.cancel_scope.cancel()
    committer.close()
    broker = Broker()
    broker.add_vhost("/")
    recover_into(broker, Store(tmp_path / "data"))
    queue = broker.vhosts["/"].queues["jobs"]
    assert [e.message.body for e in queue.ready] == [b"job %d" % i for i in range(50)]


def test_committer_records_each_group_commit_fsync_in_the_metrics_histogram(
    tmp_path: Path,
) -> None:
    from amqplite.broker.message import Message
    from amqplite.management.metrics import LatencyHistogram

    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path, StoreConfig())
    recover_into(broker, store)
    Committer(store, lambda: [])
    histogram = store.fsync_histogram
    assert isinstance(histogram, LatencyHistogram)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True)
    store.commit()
    for i in range(3):
        vhost.publish("", Message("", "q", PERSISTENT_PROPS, b"m%d" % i, persistent=True))
        store.commit()
    store.commit()  # nothing pending: no fsync, nothing observed
    assert histogram.count == 4
    assert histogram.sum > 0
    assert histogram.cumulative()[-1] == ("+Inf", 4)
    store.close()
