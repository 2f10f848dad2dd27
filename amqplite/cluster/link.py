"""The node-to-node link protocol, sans-I/O: framed messages for mirroring queue journals.

A frame is [u32 length][u8 type][payload]; the length counts type and payload. Strings are
[u16 length][UTF-8], byte strings [u32 length][bytes], integers big-endian u64. Every message
about a queue names it (vhost, name) and carries the sender's epoch for that queue, so a mirror
can refuse a leader older than the one it follows.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

import attrs

LINK_VERSION = 2  # 2: hellos carry a nonce, answered by a proof of the cluster secret
MAX_FRAME = 64 << 20  # a frame larger than this is a protocol error, not an allocation
FRAME_HEAD = struct.Struct(">IB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class LinkError(Exception):
    """The peer sent something that is not the link protocol: the link is closed."""


class FrameType(enum.IntEnum):
    """The type byte of a frame."""

    HELLO = 1
    APPEND = 2
    ACK = 3
    SNAPSHOT_BEGIN = 4
    SNAPSHOT_CHUNK = 5
    SNAPSHOT_END = 6
    REFUSE = 7
    PUBLISH = 8
    CONFIRM = 9
    NOT_LEADING = 10
    CONSUME = 11
    DELIVER = 12
    SETTLE = 13
    CANCELLED = 14
    ASK = 15
    ANSWER = 16
    RESOLVE = 17
    PROOF = 18


@attrs.frozen
class QueueRef:
    """A queue across the cluster: vhost and name."""

    vhost: str
    name: str


@attrs.frozen
class Hello:
    """The first frame each side sends: who it is, the link version it speaks, a fresh nonce."""

    node: str
    version: int = LINK_VERSION
    nonce: bytes = b""


@attrs.frozen
class Proof:
    """The second frame: an HMAC of the peer's nonce under the cluster secret (see link_stream)."""

    mac: bytes


@attrs.frozen
class Append:
    """Journal records of a queue from its leader; `first` is the log offset of the first one."""

    queue: QueueRef
    epoch: int
    first: int
    records: tuple[bytes, ...]

    @property
    def end(self) -> int:
        """The log offset just past the last record."""
        return self.first + len(self.records)


@attrs.frozen
class Ack:
    """A mirror has every record of the queue before `offset` on disk (fsynced)."""

    queue: QueueRef
    epoch: int
    offset: int


@attrs.frozen
class SnapshotBegin:
    """A snapshot of the queue follows; it stands for the log up to `offset` (catch-up)."""

    queue: QueueRef
    epoch: int
    offset: int


@attrs.frozen
class SnapshotChunk:
    """Records of the snapshot (the queue's live messages as enqueue records)."""

    queue: QueueRef
    epoch: int
    records: tuple[bytes, ...]


@attrs.frozen
class SnapshotEnd:
    """The snapshot is complete: the mirror's log now ends at `offset`; appends follow from there."""

    queue: QueueRef
    epoch: int
    offset: int


@attrs.frozen
class Refuse:
    """A mirror refuses a message of a lower epoch than `epoch` (the one it follows)."""

    queue: QueueRef
    epoch: int
    reason: str


@attrs.frozen
class Publish:
    """A message a node routed to a queue another node leads: `ticket` numbers it on this link."""

    queue: QueueRef
    epoch: int
    ticket: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


@attrs.frozen
class Confirm:
    """The leader took forwarded publishes: `acked` are durable (on every in-sync disk), `nacked` refused."""

    queue: QueueRef
    epoch: int
    acked: tuple[int, ...]
    nacked: tuple[int, ...] = ()


@attrs.frozen
class NotLeading:
    """The receiver does not lead the queue: these forwarded publishes were not taken."""

    queue: QueueRef
    epoch: int
    tickets: tuple[int, ...]


@attrs.frozen
class Consume:
    """Deliver the queue's messages over this link, at most `window` unsettled (0: stop, requeue)."""

    queue: QueueRef
    epoch: int
    window: int


@attrs.frozen
class Deliver:
    """A message of the queue for the consumers of the other node; `tag` settles it."""

    queue: QueueRef
    epoch: int
    tag: int
    delivery_count: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


@attrs.frozen
class Settle:
    """Deliveries the other node's consumers acked (they leave the queue)."""

    queue: QueueRef
    epoch: int
    tags: tuple[int, ...]


@attrs.frozen
class Cancelled:
    """The leader ended this link's consumer of the queue (it stopped leading, or the queue went)."""

    queue: QueueRef
    epoch: int
    reason: str


class AskOp(enum.IntEnum):
    """What an `Ask` asks the leader of a queue."""

    GET = 1  # basic.get, the message held for this node until resolved
    GET_NO_ACK = 2  # basic.get with no_ack
    PURGE = 3  # queue.purge
    COUNT = 4  # the counts of queue.declare-ok


class AnswerStatus(enum.IntEnum):
    """How the leader answered an `Ask`."""

    OK = 0
    NOT_LEADING = 1  # ask the next leader
    FAILED = 2  # `reason` says why (the client hears it)


@attrs.frozen
class Ask:
    """A request on a queue the other node leads; `request` numbers it on this link."""

    queue: QueueRef
    epoch: int
    request: int
    op: int


@attrs.frozen
class Answer:
    """The leader's answer to an `Ask`: counts, and for a basic.get the message (`tag` 0: none)."""

    queue: QueueRef
    epoch: int
    request: int
    status: int
    messages: int
    consumers: int
    tag: int
    delivery_count: int
    reason: str
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


@attrs.frozen
class Resolve:
    """Messages got by `Ask(GET)` leave the queue (acked or dead-lettered there) or are requeued."""

    queue: QueueRef
    epoch: int
    tags: tuple[int, ...]
    requeue: bool


Forwarding = (
    Publish | Confirm | NotLeading | Consume | Deliver | Settle | Cancelled | Ask | Answer | Resolve
)
Message = (
    Hello | Proof | Append | Ack | SnapshotBegin | SnapshotChunk | SnapshotEnd | Refuse | Forwarding
)


def _str(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("a link string is at most 65535 bytes")
    return _U16.pack(len(data)) + data


def _blobs(records: tuple[bytes, ...]) -> bytes:
    parts = [_U32.pack(len(records))]
    for record in records:
        parts.append(_U32.pack(len(record)))
        parts.append(record)
    return b"".join(parts)


def _u64s(values: tuple[int, ...]) -> bytes:
    return _U32.pack(len(values)) + b"".join(_U64.pack(v) for v in values)


def _bytes(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _queue(queue: QueueRef, epoch: int) -> bytes:
    return _str(queue.vhost) + _str(queue.name) + _U64.pack(epoch)


def _payload(message: Message) -> tuple[FrameType, bytes]:
    if isinstance(message, Hello):
        return FrameType.HELLO, _U16.pack(message.version) + _str(message.node) + _bytes(
            message.nonce
        )
    if isinstance(message, Proof):
        return FrameType.PROOF, _bytes(message.mac)
    head = _queue(message.queue, message.epoch)
    if isinstance(message, Append):
        return FrameType.APPEND, head + _U64.pack(message.first) + _blobs(message.records)
    if isinstance(message, Ack):
        return FrameType.ACK, head + _U64.pack(message.offset)
    if isinstance(message, SnapshotBegin):
        return FrameType.SNAPSHOT_BEGIN, head + _U64.pack(message.offset)
    if isinstance(message, SnapshotChunk):
        return FrameType.SNAPSHOT_CHUNK, head + _blobs(message.records)
    if isinstance(message, SnapshotEnd):
        return FrameType.SNAPSHOT_END, head + _U64.pack(message.offset)
    if isinstance(message, Refuse):
        return FrameType.REFUSE, head + _str(message.reason)
    return _forwarding_payload(message, head)


def _forwarding_payload(message: Forwarding, head: bytes) -> tuple[FrameType, bytes]:
    if isinstance(message, Ask):
        return FrameType.ASK, head + _U64.pack(message.request) + _U64.pack(message.op)
    if isinstance(message, Answer):
        numbers = (
            message.request,
            message.status,
            message.messages,
            message.consumers,
            message.tag,
            message.delivery_count,
        )
        counts = b"".join(map(_U64.pack, numbers))
        content = _content(message.exchange, message.routing_key, message.properties, message.body)
        return FrameType.ANSWER, head + counts + _str(message.reason) + content
    if isinstance(message, Resolve):
        return FrameType.RESOLVE, head + _u64s(message.tags) + _U64.pack(int(message.requeue))
    if isinstance(message, Publish):
        content = _content(message.exchange, message.routing_key, message.properties, message.body)
        return FrameType.PUBLISH, head + _U64.pack(message.ticket) + content
    if isinstance(message, Confirm):
        return FrameType.CONFIRM, head + _u64s(message.acked) + _u64s(message.nacked)
    if isinstance(message, NotLeading):
        return FrameType.NOT_LEADING, head + _u64s(message.tickets)
    if isinstance(message, Consume):
        return FrameType.CONSUME, head + _U64.pack(message.window)
    if isinstance(message, Deliver):
        content = _content(message.exchange, message.routing_key, message.properties, message.body)
        counts = _U64.pack(message.tag) + _U64.pack(message.delivery_count)
        return FrameType.DELIVER, head + counts + content
    if isinstance(message, Settle):
        return FrameType.SETTLE, head + _u64s(message.tags)
    return FrameType.CANCELLED, head + _str(message.reason)


def _content(exchange: str, routing_key: str, properties: bytes, body: bytes) -> bytes:
    return _str(exchange) + _str(routing_key) + _bytes(properties) + _bytes(body)


def encode(message: Message) -> bytes:
    """One frame holding the message."""
    kind, payload = _payload(message)
    if len(payload) + 1 > MAX_FRAME:
        raise ValueError(f"a link frame is at most {MAX_FRAME} bytes")
    return FRAME_HEAD.pack(len(payload) + 1, kind) + payload


class _Reader:
    """Reads the fields of one frame's payload; running short is a LinkError."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> memoryview:
        if self.at + n > len(self.data):
            raise LinkError("a link frame ends inside a field")
        view = self.data[self.at : self.at + n]
        self.at += n
        return view

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def text(self) -> str:
        try:
            return str(self.take(self.u16()), "utf-8")
        except UnicodeDecodeError as exc:
            raise LinkError("a link string is not UTF-8") from exc

    def u64s(self) -> tuple[int, ...]:
        return tuple(self.u64() for _ in range(self.u32()))

    def blob(self) -> bytes:
        return bytes(self.take(self.u32()))

    def content(self) -> tuple[str, str, bytes, bytes]:
        exchange = self.text()
        routing_key = self.text()
        return exchange, routing_key, self.blob(), self.blob()

    def blobs(self) -> tuple[bytes, ...]:
        return tuple(bytes(self.take(self.u32())) for _ in range(self.u32()))

    def queue(self) -> tuple[QueueRef, int]:
        vhost = self.text()
        return QueueRef(vhost, self.text()), self.u64()

    def done(self) -> None:
        if self.at != len(self.data):
            raise LinkError("a link frame has bytes past its last field")


def decode(kind: int, payload: memoryview) -> Message:
    """The message of one frame's type and payload."""
    reader = _Reader(payload)
    message: Message
    if kind == FrameType.HELLO:
        version = reader.u16()
        node = reader.text()
        message = Hello(node, version, reader.blob())
    elif kind == FrameType.PROOF:
        message = Proof(reader.blob())
    elif kind in FrameType.__members__.values():
        queue, epoch = reader.queue()
        if kind == FrameType.APPEND:
            first = reader.u64()
            message = Append(queue, epoch, first, reader.blobs())
        elif kind == FrameType.ACK:
            message = Ack(queue, epoch, reader.u64())
        elif kind == FrameType.SNAPSHOT_BEGIN:
            message = SnapshotBegin(queue, epoch, reader.u64())
        elif kind == FrameType.SNAPSHOT_CHUNK:
            message = SnapshotChunk(queue, epoch, reader.blobs())
        elif kind == FrameType.SNAPSHOT_END:
            message = SnapshotEnd(queue, epoch, reader.u64())
        elif kind == FrameType.REFUSE:
            message = Refuse(queue, epoch, reader.text())
        else:
            message = _decode_forwarding(kind, queue, epoch, reader)
    else:
        raise LinkError(f"unknown link frame type {kind}")
    reader.done()
    return message


def _decode_forwarding(kind: int, queue: QueueRef, epoch: int, reader: _Reader) -> Message:
    if kind == FrameType.ASK:
        request = reader.u64()
        return Ask(queue, epoch, request, reader.u64())
    if kind == FrameType.ANSWER:
        request, status, messages, consumers, tag, count = (reader.u64() for _ in range(6))
        reason = reader.text()
        exchange, routing_key, properties, body = reader.content()
        return Answer(
            queue,
            epoch,
            request,
            status,
            messages,
            consumers,
            tag,
            count,
            reason,
            exchange,
            routing_key,
            properties,
            body,
        )
    if kind == FrameType.RESOLVE:
        tags = reader.u64s()
        return Resolve(queue, epoch, tags, bool(reader.u64()))
    if kind == FrameType.PUBLISH:
        ticket = reader.u64()
        return Publish(queue, epoch, ticket, *reader.content())
    if kind == FrameType.CONFIRM:
        acked = reader.u64s()
        return Confirm(queue, epoch, acked, reader.u64s())
    if kind == FrameType.NOT_LEADING:
        return NotLeading(queue, epoch, reader.u64s())
    if kind == FrameType.CONSUME:
        return Consume(queue, epoch, reader.u64())
    if kind == FrameType.DELIVER:
        tag = reader.u64()
        count = reader.u64()
        return Deliver(queue, epoch, tag, count, *reader.content())
    if kind == FrameType.SETTLE:
        return Settle(queue, epoch, reader.u64s())
    return Cancelled(queue, epoch, reader.text())


class LinkDecoder:
    """Bytes in, messages out: feed what the socket gave, iterate the whole frames it completed."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[Message]:
        """The messages completed by these bytes, in order (a partial frame waits for more)."""
        self._buffer += data
        while len(self._buffer) >= FRAME_HEAD.size:
            length, kind = FRAME_HEAD.unpack_from(self._buffer)
            if length < 1 or length > self.max_frame:
                raise LinkError(f"a link frame of {length} bytes (at most {self.max_frame})")
            end = 4 + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[FRAME_HEAD.size : end])
            del self._buffer[:end]
            yield decode(kind, memoryview(payload))

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buffer)
