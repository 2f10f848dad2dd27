"""An AMQP client on a trio memory stream, for tests that drive the server without sockets."""

from __future__ import annotations

from typing import Any, Protocol

import trio

from amqplite.protocol.constants import PROTOCOL_HEADER
from amqplite.protocol.frames import (
    NEED_DATA,
    FrameReader,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
)
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import encode_method, spec


class Talker(Protocol):
    """A client that sends methods and expects them on a stream."""

    stream: trio.abc.Stream

    async def send(self, channel: int, method: Any) -> None:
        """Send one method frame."""

    async def expect(self, cls: type) -> Any:
        """The next method from the server, which must be a cls."""


async def handshake(client: Talker, heartbeat: int = 0) -> None:
    """Connect as guest to vhost "/" with the heartbeat asked for."""
    await client.stream.send_all(PROTOCOL_HEADER)
    await client.expect(spec.Connection.Start)
    await client.send(
        0, build(spec.Connection.StartOk, mechanism="PLAIN", response="\x00guest\x00guest")
    )
    await client.expect(spec.Connection.Tune)
    await client.send(
        0, build(spec.Connection.TuneOk, channel_max=0, frame_max=131072, heartbeat=heartbeat)
    )
    await client.send(0, build(spec.Connection.Open, virtual_host="/"))
    await client.expect(spec.Connection.OpenOk)


async def open_channel_one(client: Talker) -> None:
    """Handshake (no heartbeats), then open channel 1."""
    await handshake(client)
    await client.send(1, spec.Channel.Open())
    await client.expect(spec.Channel.OpenOk)


class StreamClient:
    """A client on one end of a memory stream pair, reading frames as it expects them."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = FrameReader(1 << 20)
        self.reader.receive_data(PROTOCOL_HEADER)
        assert isinstance(self.reader.next_frame(), ProtocolHeaderReceived)

    async def send(self, channel: int, method: Any) -> None:
        await self.stream.send_all(encode_method(channel, method))

    async def next_frame(self) -> Any:
        """The next frame from the server, or None once it closed the stream."""
        while (frame := self.reader.next_frame()) is NEED_DATA:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.reader.receive_data(data)
        return frame

    async def expect(self, cls: type) -> Any:
        frame = await self.next_frame()
        while isinstance(frame, HeartbeatFrame):
            frame = await self.next_frame()
        assert isinstance(frame, MethodFrame), frame
        assert isinstance(frame.method, cls), frame.method
        return frame.method

    async def handshake(self, heartbeat: int) -> None:
        await handshake(self, heartbeat)

    async def open(self) -> None:
        """Handshake (no heartbeats), then open channel 1."""
        await open_channel_one(self)

    async def wait_closed(self) -> int:
        """Read until the server closes the stream; returns how many heartbeats arrived."""
        heartbeats = 0
        while (frame := await self.next_frame()) is not None:
            heartbeats += isinstance(frame, HeartbeatFrame)
        return heartbeats
