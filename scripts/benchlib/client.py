"""A lean blocking AMQP 0-9-1 client for the benchmarks: plain sockets, batched writes.

Setup methods (handshake, declares, qos, consume) go through amqplite's sans-I/O encoders
and `decode_method`. The hot paths do not build frame objects: `publish_frames` pre-encodes a
message once so a batch is one `bytes` multiplied, and `Consumer.feed` walks received bytes
with `struct.unpack_from`, reading only delivery tags (and a timestamp when asked).
"""

from __future__ import annotations

import select
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import attrs

from amqplite.protocol import PROTOCOL_HEADER, decode_method, encode_content, encode_method
from amqplite.protocol.methods import BasicPublish, spec
from amqplite.protocol.properties import DELIVERY_MODE

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/%2F"

_FRAME_HEADER: Final = struct.Struct(">BHI")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_TAG_BITS: Final = struct.Struct(">QB")
_STAMP: Final = struct.Struct(">Q")

METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
DELIVER_IDS: Final = 0x003C003C
ACK_IDS: Final = 0x003C0050
NACK_IDS: Final = 0x003C0078
CHANNEL_CLOSE_IDS: Final = 0x00140028
CONNECTION_CLOSE_IDS: Final = 0x000A0032
CONNECTION_BLOCKED_IDS: Final = 0x000A003C
CONNECTION_UNBLOCKED_IDS: Final = 0x000A003D
RECEIVE_SIZE: Final = 256 * 1024


class BrokerClosed(Exception):
    """The broker closed the channel or connection (reply code and text in the message)."""


@attrs.frozen
class BrokerURL:
    """The parts of an amqp:// URL."""

    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse ``amqp://user:pass@host:port/vhost`` (vhost percent-encoded, default "/")."""
        parts = urllib.parse.urlparse(url)
        if parts.scheme != "amqp":
            raise ValueError(f"not an amqp:// URL: {url!r}")
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 5672,
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
            vhost,
        )


def publish_frames(
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    persistent: bool = False,
    channel: int = 1,
    frame_max: int = 131072,
) -> bytes:
    """The frames of one basic.publish with its content, ready to send (or multiply)."""
    properties = b"\x00\x00"
    if persistent:
        properties = struct.pack(">HB", DELIVERY_MODE, 2)
    return encode_method(channel, BasicPublish(exchange, routing_key)) + encode_content(
        channel, 60, properties, body, frame_max
    )


_ACK_FRAME: Final = struct.Struct(">BHIIQBB")


def ack_frame(delivery_tag: int, multiple: bool, channel: int = 1) -> bytes:
    """The frame of one basic.ack."""
    return _ACK_FRAME.pack(METHOD, channel, 13, ACK_IDS, delivery_tag, multiple, 0xCE)


def acks_each(first: int, last: int, channel: int = 1) -> bytes:
    """One basic.ack frame per delivery tag from ``first`` to ``last`` inclusive."""
    pack = _ACK_FRAME.pack
    return b"".join(
        pack(METHOD, channel, 13, ACK_IDS, tag, 0, 0xCE) for tag in range(first, last + 1)
    )


def stamp_body(size: int) -> Callable[[int], bytes]:
    """A function giving a body of ``size`` bytes (at least 8) that starts with a timestamp."""
    padding = b"x" * max(0, size - _STAMP.size)
    pack = _STAMP.pack

    def body(now_ns: int) -> bytes:
        return pack(now_ns) + padding

    return body


class Client:
    """One blocking AMQP connection; channel 1 is opened by `open_channel`."""

    def __init__(self, url: str, *, heartbeat: int = 0, timeout: float = 30.0) -> None:
        self.url = BrokerURL.parse(url)
        self.sock = socket.create_connection((self.url.host, self.url.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.frame_max = 131072
        self.server_properties: dict[str, Any] = {}
        self.timeout = timeout
        self._handshake(heartbeat)

    # -- plumbing ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send bytes (blocks while TCP pushes back)."""
        self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> bool:
        """Append what the socket has to the buffer; False on timeout; raises when closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except TimeoutError:
            return False
        if not data:
            raise BrokerClosed("the broker closed the TCP connection")
        self.buffer += data
        return True

    def readable(self) -> bool:
        """True when bytes wait on the socket (a zero-timeout poll)."""
        return bool(self.buffer) or bool(select.select([self.sock], [], [], 0)[0])

    def _next_method(self, timeout: float = 30.0) -> tuple[int, Any]:
        """Block for the next method frame (skipping content and heartbeats)."""
        deadline = time.monotonic() + timeout
        while True:
            buf = self.buffer
            if len(buf) >= 7:
                kind, channel, size = _FRAME_HEADER.unpack_from(buf, 0)
                if len(buf) >= size + 8:
                    payload = bytes(buf[7 : 7 + size])
                    del buf[: size + 8]
                    if kind == METHOD:
                        method = decode_method(payload)
                        _raise_on_close(method)
                        return channel, method
                    continue
            left = deadline - time.monotonic()
            if left <= 0 or not self.receive(left):
                raise TimeoutError(f"no reply from the broker within {timeout} s")

    def rpc(
        self,
        channel: int,
        method: Any,
        reply: type[Any] | tuple[type[Any], ...],
        timeout: float = 30.0,
    ) -> Any:
        """Send a synchronous method and wait for its reply on the same channel."""
        self.send(encode_method(channel, method))
        while True:
            got_channel, got = self._next_method(timeout)
            if got_channel == channel and isinstance(got, reply):
                return got

    def _handshake(self, heartbeat: int) -> None:
        self.send(PROTOCOL_HEADER)
        _, start = self._next_method(self.timeout)
        if not isinstance(start, spec.Connection.Start):
            raise BrokerClosed(f"expected connection.start, got {start!r}")
        self.server_properties = dict(start.server_properties or {})
        response = f"\x00{self.url.user}\x00{self.url.password}"
        self.send(
            encode_method(
                0,
                spec.Connection.StartOk(
                    client_properties={
                        "product": "amqplite-bench",
                        "capabilities": {"basic.nack": True, "publisher_confirms": True},
                    },
                    mechanism="PLAIN",
                    response=response,
                    locale="en_US",
                ),
            )
        )
        _, tune = self._next_method(self.timeout)
        if not isinstance(tune, spec.Connection.Tune):
            raise BrokerClosed(f"expected connection.tune, got {tune!r}")
        self.frame_max = tune.frame_max or 131072
        self.send(
            encode_method(
                0,
                spec.Connection.TuneOk(
                    channel_max=tune.channel_max, frame_max=self.frame_max, heartbeat=heartbeat
                ),
            )
        )
        self.rpc(
            0,
            spec.Connection.Open(virtual_host=self.url.vhost),
            spec.Connection.OpenOk,
            self.timeout,
        )

    # -- setup methods -------------------------------------------------------------------

    @property
    def product(self) -> str:
        """The broker's product name and version from connection.start."""
        props = self.server_properties
        name = str(props.get("product", "unknown"))
        version = props.get("version")
        return f"{name} {version}" if version else name

    def open_channel(self, channel: int = 1) -> None:
        """Open a channel."""
        self.rpc(channel, spec.Channel.Open(), spec.Channel.OpenOk)

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        arguments: dict[str, Any] | None = None,
        channel: int = 1,
    ) -> int:
        """Declare a queue; returns its message count."""
        ok = self.rpc(
            channel,
            spec.Queue.Declare(queue=name, durable=durable, arguments=arguments or {}),
            spec.Queue.DeclareOk,
        )
        return int(ok.message_count)

    def queue_depth(self, name: str, channel: int = 1, timeout: float = 30.0) -> int:
        """The message count of an existing queue (a passive declare).

        On one channel it is answered after every publish sent before it has been routed,
        so a publisher uses it to wait until the broker has taken all it sent.
        """
        ok = self.rpc(
            channel, spec.Queue.Declare(queue=name, passive=True), spec.Queue.DeclareOk, timeout
        )
        return int(ok.message_count)

    def queue_depths(
        self, names: tuple[str, ...], channel: int = 1, timeout: float = 30.0
    ) -> list[int]:
        """Ready-message counts of existing queues: passive declares sent in one burst."""
        self.send(
            b"".join(
                encode_method(channel, spec.Queue.Declare(queue=name, passive=True))
                for name in names
            )
        )
        counts = []
        while len(counts) < len(names):
            got_channel, got = self._next_method(timeout)
            if got_channel == channel and isinstance(got, spec.Queue.DeclareOk):
                counts.append(int(got.message_count))
        return counts

    def delete_queue(self, name: str, channel: int = 1) -> None:
        """Delete a queue."""
        self.rpc(channel, spec.Queue.Delete(queue=name), spec.Queue.DeleteOk)

    def declare_exchange(self, name: str, kind: str, channel: int = 1) -> None:
        """Declare a non-durable exchange."""
        self.rpc(
            channel,
            spec.Exchange.Declare(exchange=name, exchange_type=kind),
            spec.Exchange.DeclareOk,
        )

    def delete_exchange(self, name: str, channel: int = 1) -> None:
        """Delete an exchange."""
        self.rpc(channel, spec.Exchange.Delete(exchange=name), spec.Exchange.DeleteOk)

    def bind(self, queue: str, exchange: str, routing_key: str, channel: int = 1) -> None:
        """Bind a queue to an exchange."""
        self.rpc(
            channel,
            spec.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key),
            spec.Queue.BindOk,
        )

    def bind_many(self, bindings: list[tuple[str, str, str]], channel: int = 1) -> None:
        """Bind many (queue, exchange, key) in one pipelined burst, then wait for every bind-ok."""
        data = b"".join(
            encode_method(channel, spec.Queue.Bind(queue=q, exchange=e, routing_key=k))
            for q, e, k in bindings
        )
        self.send(data)
        for _ in bindings:
            while True:
                got_channel, got = self._next_method(self.timeout)
                if got_channel == channel and isinstance(got, spec.Queue.BindOk):
                    break

    def qos(self, prefetch: int, channel: int = 1) -> None:
        """Set the channel's prefetch count."""
        self.rpc(channel, spec.Basic.Qos(prefetch_count=prefetch), spec.Basic.QosOk)

    def confirm_select(self, channel: int = 1) -> None:
        """Put the channel in publisher-confirm mode."""
        self.rpc(channel, spec.Confirm.Select(), spec.Confirm.SelectOk)

    def consume(self, queue: str, tag: str, channel: int = 1) -> None:
        """Start a consumer (manual acks)."""
        self.rpc(channel, spec.Basic.Consume(queue=queue, consumer_tag=tag), spec.Basic.ConsumeOk)

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection politely (connection.close, wait for close-ok)."""
        try:
            self.send(encode_method(0, spec.Connection.Close(reply_code=200, reply_text="bye")))
            self.sock.settimeout(timeout)
            while True:
                data = self.sock.recv(RECEIVE_SIZE)
                if not data or _has_close_ok(self.buffer + data):
                    break
                self.buffer += data
                if len(self.buffer) > 4 * RECEIVE_SIZE:
                    del self.buffer[:-RECEIVE_SIZE]
        except (OSError, BrokerClosed):
            pass
        finally:
            self.sock.close()


def _has_close_ok(data: bytes | bytearray) -> bool:
    return b"\x00\x0a\x00\x33" in data


def _raise_on_close(method: Any) -> None:
    if isinstance(method, spec.Channel.Close | spec.Connection.Close):
        raise BrokerClosed(f"{method.name} {method.reply_code} {method.reply_text}")


@attrs.define
class Consumer:
    """Counts deliveries, confirms and latencies in received bytes without decoding frames."""

    stamps: bool = False
    deliveries: int = 0
    last_tag: int = 0
    confirmed: int = 0
    nacked: int = 0
    latencies_ns: list[int] = attrs.Factory(list)
    tags: list[int] = attrs.Factory(list)
    keep_tags: bool = False

    def feed(self, buffer: bytearray, now_ns: int) -> None:
        """Consume every complete frame at the front of ``buffer`` (and drop them)."""
        unpack_header = _FRAME_HEADER.unpack_from
        unpack_u32 = _U32.unpack_from
        unpack_u64 = _U64.unpack_from
        size_total = len(buffer)
        offset = 0
        deliveries = 0
        last_tag = self.last_tag
        stamps = self.stamps
        keep_tags = self.keep_tags
        latencies = self.latencies_ns
        while size_total - offset >= 8:
            kind, _channel, size = unpack_header(buffer, offset)
            end = offset + 7 + size
            if end >= size_total:
                break
            if kind == METHOD:
                ids = unpack_u32(buffer, offset + 7)[0]
                if ids == DELIVER_IDS:
                    tag_at = offset + 12 + buffer[offset + 11]
                    last_tag = unpack_u64(buffer, tag_at)[0]
                    deliveries += 1
                    if keep_tags:
                        self.tags.append(last_tag)
                else:
                    self._other_method(ids, bytes(buffer[offset + 7 : end]))
            elif kind == BODY and stamps:
                latencies.append(now_ns - unpack_u64(buffer, offset + 7)[0])
            offset = end + 1
        if offset:
            del buffer[:offset]
        self.deliveries += deliveries
        self.last_tag = last_tag

    def _other_method(self, ids: int, payload: bytes) -> None:
        if ids in (ACK_IDS, NACK_IDS):
            tag, _bits = _TAG_BITS.unpack_from(payload, 4)
            if ids == NACK_IDS:
                self.nacked += 1
            # one channel: confirms come in order, so the highest tag counts them all
            self.confirmed = max(self.confirmed, tag)
            return
        if ids in (CONNECTION_BLOCKED_IDS, CONNECTION_UNBLOCKED_IDS):
            return
        _raise_on_close(decode_method(payload))


def send_confirmed(
    client: Client, frames: bytes, count: int, window: int, timeout: float = 60.0
) -> Consumer:
    """Send one publish's `frames` count times on a confirm channel, at most `window` unconfirmed.

    Returns the tally once every one is confirmed (or nacked: see its `nacked`).
    """
    confirms = Consumer()
    sent = 0
    while confirms.confirmed < count:
        room = min(window - (sent - confirms.confirmed), count - sent)
        if room > 0:
            client.send(frames * room)
            sent += room
        client.receive(timeout=timeout)
        confirms.feed(client.buffer, 0)
    return confirms
