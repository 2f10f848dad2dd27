"""A client speaking to a Session in memory, and a broker with the guest user, for session tests."""

from __future__ import annotations

from typing import Any

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.protocol.assembler import Command, ContentAssembler
from amqplite.protocol.constants import PROTOCOL_HEADER
from amqplite.protocol.frames import (
    NEED_DATA,
    FrameReader,
    HeartbeatFrame,
    ProtocolHeaderReceived,
)
from amqplite.protocol.methods import BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.session.connection import Session, SessionSettings


def plain(user: str, password: str) -> str:
    """A SASL PLAIN response."""
    return f"\x00{user}\x00{password}"


def guest_broker() -> Broker:
    """A broker with vhost "/" and the guest user allowed everything on it."""
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest")
    broker.set_permissions("guest", "/", Permission())
    return broker


class Client:
    """A test client speaking to a Session in memory."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.reader = FrameReader(1 << 20)
        self.reader.receive_data(PROTOCOL_HEADER)
        assert isinstance(self.reader.next_frame(), ProtocolHeaderReceived)
        self.assembler = ContentAssembler()

    def send(self, channel: int, method: Any) -> None:
        self.session.receive_data(encode_method(channel, method))

    def publish(self, channel: int, routing_key: str, body: bytes, exchange: str = "") -> None:
        self.session.receive_data(
            encode_method(channel, BasicPublish(exchange, routing_key, False, False))
            + encode_content(channel, 60, b"\x10\x00\x02", body, 131072)  # delivery_mode 2
        )

    def received(self) -> list[Command]:
        """Every complete command the server sent since the last call."""
        self.reader.receive_data(self.session.data_to_send())
        commands = []
        while (frame := self.reader.next_frame()) is not NEED_DATA:
            if isinstance(frame, HeartbeatFrame):
                continue
            command = self.assembler.handle(frame)  # type: ignore[arg-type]
            if command is not None:
                commands.append(command)
        return commands

    def handshake(self, vhost: str = "/") -> None:
        self.session.receive_data(PROTOCOL_HEADER)
        self.send(
            0, build(spec.Connection.StartOk, mechanism="PLAIN", response=plain("guest", "guest"))
        )
        self.send(0, build(spec.Connection.TuneOk, channel_max=0, frame_max=131072, heartbeat=0))
        self.send(0, build(spec.Connection.Open, virtual_host=vhost))
        kinds = [type(c.method) for c in self.received()]
        assert kinds == [spec.Connection.Start, spec.Connection.Tune, spec.Connection.OpenOk]

    def open_channel(self, channel: int) -> None:
        self.send(channel, spec.Channel.Open())
        assert [type(c.method) for c in self.received()] == [spec.Channel.OpenOk]


def consuming_client(
    broker: Broker, prefetch: int | None = None, settings: SessionSettings | None = None
) -> Client:
    """A client consuming queue q (declared here) as consumer c on channel 1; replies read."""
    client = Client(Session(broker, settings))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    if prefetch is not None:
        client.send(1, build(spec.Basic.Qos, prefetch_count=prefetch))
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c"))
    client.received()
    return client
