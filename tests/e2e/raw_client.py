"""A small raw-socket AMQP 0-9-1 client for tests that send what real clients never would."""

from __future__ import annotations

import enum
import socket
import struct
import time
from typing import Any, TypeVar

import attrs
from pamqp import commands, encode
from pamqp import frame as pamqp_frame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
HEARTBEAT_FRAME = struct.pack(">BHIB", FRAME_HEARTBEAT, 0, 0, FRAME_END)

MethodT = TypeVar("MethodT")

CLIENT_PROPERTIES: dict[str, Any] = {
    "product": "amqplite-raw-test-client",
    "capabilities": {
        "authentication_failure_close": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
    },
}


class PeerClosed(Exception):
    """The server closed the TCP connection."""


@attrs.frozen
class Frame:
    """One frame read from the server: its type, channel, raw payload and decoded value."""

    frame_type: int
    channel: int
    payload: bytes
    value: Any = None


def shortstr(value: bytes) -> bytes:
    """Encode an AMQP shortstr from raw bytes."""
    return struct.pack(">B", len(value)) + value


def longstr(value: bytes) -> bytes:
    """Encode an AMQP longstr from raw bytes."""
    return struct.pack(">I", len(value)) + value


def raw_frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    """Build a frame by hand, with any end octet."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_frame(channel: int, method: Any) -> bytes:
    """Marshal a pamqp method into a method frame."""
    return pamqp_frame.marshal(method, channel)


def raw_method_frame(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    """Build a method frame from raw ids and argument bytes (for ids pamqp does not know)."""
    return raw_frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


def content_header_frame(channel: int, body_size: int, class_id: int = 60) -> bytes:
    """A content header frame with no properties set."""
    return raw_frame(FRAME_HEADER, channel, struct.pack(">HHQH", class_id, 0, body_size, 0))


def body_frame(channel: int, body: bytes) -> bytes:
    """A content body frame."""
    return raw_frame(FRAME_BODY, channel, body)


def plain_response(user: str, password: str) -> bytes:
    """The SASL PLAIN response: NUL user NUL password."""
    return b"\x00" + user.encode() + b"\x00" + password.encode()


def amqplain_response(user: str, password: str) -> bytes:
    """The AMQPLAIN response: a field table without its length prefix, built by hand."""
    return (
        shortstr(b"LOGIN")
        + b"S"
        + longstr(user.encode())
        + shortstr(b"PASSWORD")
        + b"S"
        + longstr(password.encode())
    )


def start_ok_frame(
    mechanism: str, response: bytes, client_properties: dict[str, Any] | None = None
) -> bytes:
    """Build connection.start-ok by hand so the SASL response is sent byte for byte."""
    props = CLIENT_PROPERTIES if client_properties is None else client_properties
    args = (
        encode.field_table(props)
        + shortstr(mechanism.encode())
        + longstr(response)
        + shortstr(b"en_US")
    )
    return raw_method_frame(0, 10, 11, args)


@attrs.frozen
class Tuning:
    """Connection limits: the server's connection.tune, then what our tune-ok settled on."""

    channel_max: int
    frame_max: int
    heartbeat: int


class RawClient:
    """A blocking AMQP client over a plain socket that reads and writes whole frames."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.eof = False
        self.server_properties: dict[str, Any] = {}
        self.mechanisms: list[str] = []
        self.tuning: Tuning | None = None

    @classmethod
    def for_broker(cls, broker: Any, timeout: float = 5.0) -> RawClient:
        """Connect to the broker of a conftest fixture."""
        return cls(broker.host, broker.port, timeout)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our end of the socket."""
        self.sock.close()

    def abort(self) -> None:
        """Close the socket with a TCP reset, as a crashed peer would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    # -- writing ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def send_method(self, channel: int, method: Any) -> None:
        """Send one pamqp method on a channel."""
        self.send(method_frame(channel, method))

    def publish(
        self, channel: int, routing_key: str, body: bytes, exchange: str = "", frame_max: int = 0
    ) -> None:
        """Send basic.publish, its content header and its body (split to fit frame_max)."""
        data = method_frame(
            channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key)
        )
        data += content_header_frame(channel, len(body))
        chunk = (frame_max or (self.tuning.frame_max if self.tuning else 0) or 131072) - 8
        for start in range(0, len(body), chunk):
            data += body_frame(channel, body[start : start + chunk])
        self.send(data)

    # -- reading ---------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        """Read more bytes into the buffer, or raise PeerClosed / TimeoutError."""
        if self.eof:
            raise PeerClosed("server closed the connection")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no data from the server in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise PeerClosed("server closed the connection")
        self.buffer += data

    def read_exact(self, count: int, timeout: float = 5.0) -> bytes:
        """Read exactly count raw bytes."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            self._fill(deadline)
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_frame(self, timeout: float = 5.0) -> Frame:
        """Read one whole frame and decode it with pamqp."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 7:
            self._fill(deadline)
        frame_type, channel, size = struct.unpack(">BHI", self.buffer[:7])
        while len(self.buffer) < 8 + size:
            self._fill(deadline)
        raw = bytes(self.buffer[: 8 + size])
        del self.buffer[: 8 + size]
        assert raw[-1] == FRAME_END, f"server sent a bad frame end: {raw!r}"
        value = None
        if frame_type in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY):
            value = pamqp_frame.unmarshal(raw)[2]
        return Frame(frame_type, channel, raw[7:-1], value)

    def read_next(self, timeout: float = 5.0) -> Frame:
        """Read the next frame that is not a heartbeat."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(deadline - time.monotonic(), 0.001))
            if frame.frame_type != FRAME_HEARTBEAT:
                return frame

    def expect(
        self, method_type: type[MethodT], channel: int | None = None, timeout: float = 5.0
    ) -> MethodT:
        """Read the next method and assert it is of the given pamqp type; return it."""
        frame = self.read_next(timeout)
        assert isinstance(frame.value, method_type), f"expected {method_type.__name__}: {frame}"
        if channel is not None:
            assert frame.channel == channel, frame
        return frame.value

    def expect_connection_close(self, timeout: float = 5.0) -> commands.Connection.Close:
        """Read frames until connection.close (other frames are skipped) and return it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self.read_frame(max(remaining, 0.001))
            except PeerClosed:
                raise AssertionError(
                    "server closed the socket without sending connection.close"
                ) from None
            if isinstance(frame.value, commands.Connection.Close):
                assert frame.channel == 0
                return frame.value

    def read_delivery(self, timeout: float = 5.0) -> tuple[commands.Basic.Deliver, bytes]:
        """Read basic.deliver, its content header and its body frames."""
        deliver = self.expect(commands.Basic.Deliver, timeout=timeout)
        header = self.read_next(timeout)
        assert header.frame_type == FRAME_HEADER, header
        body = b""
        while len(body) < header.value.body_size:
            frame = self.read_next(timeout)
            assert frame.frame_type == FRAME_BODY, frame
            body += frame.payload
        return deliver, body

    def expect_silent_close(self, timeout: float = 5.0) -> None:
        """Assert the server closes the socket without sending connection.close first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.read_frame(max(deadline - time.monotonic(), 0.001))
            except PeerClosed:
                return
            assert not isinstance(frame.value, commands.Connection.Close), frame.value

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read and drop whatever comes until the server closes the socket; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except PeerClosed:
                return True
            except TimeoutError:
                return False
            self.buffer.clear()

    def close_ok_and_wait_closed(self, timeout: float = 5.0) -> bool:
        """Answer the server's connection.close with close-ok; True once it closes the socket."""
        try:
            self.send_method(0, commands.Connection.CloseOk())
        except OSError:
            return True
        return self.wait_closed(timeout)

    # -- handshake -------------------------------------------------------------------------

    def send_protocol_header(self, header: bytes = PROTOCOL_HEADER) -> None:
        """Send the protocol header (or any eight bytes in its place)."""
        self.send(header)

    def read_start(self, timeout: float = 5.0) -> commands.Connection.Start:
        """Read connection.start and remember the server properties and mechanisms."""
        start = self.expect(commands.Connection.Start, channel=0, timeout=timeout)
        self.server_properties = start.server_properties
        self.mechanisms = start.mechanisms.split()
        return start

    def start(
        self,
        user: str = "guest",
        password: str = "guest",
        mechanism: str = "PLAIN",
        response: bytes | None = None,
    ) -> None:
        """Protocol header, connection.start, and start-ok with the given credentials."""
        self.send_protocol_header()
        self.read_start()
        if response is None:
            if mechanism == "AMQPLAIN":
                response = amqplain_response(user, password)
            else:
                response = plain_response(user, password)
        self.send(start_ok_frame(mechanism, response))

    def read_tune(self, timeout: float = 5.0) -> Tuning:
        """Read connection.tune and remember it."""
        tune = self.expect(commands.Connection.Tune, channel=0, timeout=timeout)
        self.tuning = Tuning(tune.channel_max, tune.frame_max, tune.heartbeat)
        return self.tuning

    def tune_ok(self, channel_max: int = 0, frame_max: int = 0, heartbeat: int = 0) -> None:
        """Send connection.tune-ok; zeros take the server's proposal (heartbeat 0 = off)."""
        assert self.tuning is not None
        frame_max = frame_max or self.tuning.frame_max
        channel_max = channel_max or self.tuning.channel_max
        self.tuning = Tuning(channel_max, frame_max, heartbeat)
        self.send_method(
            0,
            commands.Connection.TuneOk(
                channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat
            ),
        )

    def open_vhost(self, vhost: str = "/") -> None:
        """Send connection.open for a vhost."""
        self.send_method(0, commands.Connection.Open(virtual_host=vhost))

    def handshake(
        self,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        heartbeat: int = 0,
        frame_max: int = 0,
        mechanism: str = "PLAIN",
    ) -> None:
        """The whole opening handshake, up to connection.open-ok."""
        self.start(user, password, mechanism)
        self.read_tune()
        self.tune_ok(frame_max=frame_max, heartbeat=heartbeat)
        self.open_vhost(vhost)
        self.expect(commands.Connection.OpenOk, channel=0)

    def open_channel(self, channel: int = 1) -> None:
        """Open a channel and wait for open-ok."""
        self.send_method(channel, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk, channel=channel)


def assert_connection_closed_with(
    client: RawClient, code: enum.IntEnum, *words: str
) -> commands.Connection.Close:
    """The server sends connection.close with code (and words in its text), then drops the socket."""
    close = client.expect_connection_close()
    assert close.reply_code == code, close.reply_text
    assert close.reply_text.startswith(code.name), close.reply_text
    for word in words:
        assert word.lower() in close.reply_text.lower(), close.reply_text
    assert client.close_ok_and_wait_closed(), "server did not close the socket after close-ok"
    return close


def connected(broker: Any, **handshake: Any) -> RawClient:
    """A RawClient that has completed the handshake with the broker."""
    client = RawClient.for_broker(broker)
    try:
        client.handshake(
            user=broker.user, password=broker.password, vhost=broker.vhost, **handshake
        )
    except BaseException:
        client.close()
        raise
    return client


__all__ = [
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "HEARTBEAT_FRAME",
    "PROTOCOL_HEADER",
    "Frame",
    "PeerClosed",
    "RawClient",
    "amqplain_response",
    "assert_connection_closed_with",
    "body_frame",
    "connected",
    "content_header_frame",
    "longstr",
    "method_frame",
    "plain_response",
    "raw_frame",
    "raw_method_frame",
    "shortstr",
    "start_ok_frame",
]
