"""Direct writes after a receive over real sockets: partial writes keep every byte in order."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from stream_client import StreamClient

from amqplite.config.models import Config
from amqplite.protocol.frames import MethodFrame
from amqplite.protocol.methods import BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.server.node import Node


async def serve_socket(node: Node, nursery: trio.Nursery, sndbuf: int = 0) -> StreamClient:
    """A client on one end of a socketpair whose other end the node serves as a SocketStream."""
    client_sock, server_sock = socket.socketpair()
    if sndbuf:
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    server = trio.SocketStream(trio.socket.from_stdlib_socket(server_sock))
    nursery.start_soon(node.serve_stream, server, "socketpair")
    return StreamClient(trio.SocketStream(trio.socket.from_stdlib_socket(client_sock)))


def publishes(count: int, size: int) -> bytes:
    return b"".join(
        encode_method(1, BasicPublish("", "q", False, False))
        + encode_content(1, 60, b"\x00\x00", b"%08d" % i + b"x" * (size - 8), 131072)
        for i in range(count)
    )


@pytest.mark.trio
async def test_deliveries_larger_than_the_socket_buffer_arrive_whole_and_in_order() -> None:
    node = Node(Config())
    async with trio.open_nursery() as nursery:
        consumer = await serve_socket(node, nursery, sndbuf=4096)
        await consumer.handshake(heartbeat=0)
        await consumer.send(1, spec.Channel.Open())
        await consumer.expect(spec.Channel.OpenOk)
        await consumer.send(1, build(spec.Queue.Declare, queue="q"))
        await consumer.expect(spec.Queue.DeclareOk)
        await consumer.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
        await consumer.expect(spec.Basic.ConsumeOk)
        publisher = await serve_socket(node, nursery)
        await publisher.handshake(heartbeat=0)
        await publisher.send(1, spec.Channel.Open())
        await publisher.expect(spec.Channel.OpenOk)
        count, size = 300, 3000  # ~1 MB of deliveries, far beyond what one write takes
        await publisher.stream.send_all(publishes(count, size))
        seen: list[int] = []
        while len(seen) < count:
            frame: Any = await consumer.next_frame()
            assert frame is not None
            if isinstance(frame, MethodFrame):
                assert isinstance(frame.method, spec.Basic.Deliver)
                assert frame.method.delivery_tag == len(seen) + 1
                seen.append(frame.method.delivery_tag)
            elif hasattr(frame, "payload"):
                assert len(frame.payload) == size
                assert frame.payload[:8] == b"%08d" % (len(seen) - 1)
        nursery.cancel_scope.cancel()
    assert seen == list(range(1, count + 1))
