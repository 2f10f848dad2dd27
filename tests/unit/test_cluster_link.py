"""The node-link protocol (sans-I/O): frames round-trip, split anywhere; bad frames are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqplite.cluster.link import (
    FRAME_HEAD,
    Ack,
    Answer,
    Append,
    Ask,
    Cancelled,
    Confirm,
    Consume,
    Deliver,
    Hello,
    LinkDecoder,
    LinkError,
    Message,
    NotLeading,
    Proof,
    Publish,
    QueueRef,
    Refuse,
    Resolve,
    Settle,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    encode,
)

Q = QueueRef("/", "orders")
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=40)
blobs = st.lists(st.binary(max_size=64), max_size=6).map(tuple)
queues = st.builds(QueueRef, text, text)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, text, st.integers(0, 0xFFFF), st.binary(max_size=16)),
    st.builds(Proof, st.binary(max_size=32)),
    st.builds(Append, queues, u64, u64, blobs),
    st.builds(Ack, queues, u64, u64),
    st.builds(SnapshotBegin, queues, u64, u64),
    st.builds(SnapshotChunk, queues, u64, blobs),
    st.builds(SnapshotEnd, queues, u64, u64),
    st.builds(Refuse, queues, u64, text),
    st.builds(
        Publish, queues, u64, u64, text, text, st.binary(max_size=32), st.binary(max_size=64)
    ),
    st.builds(
        Confirm,
        queues,
        u64,
        st.lists(u64, max_size=5).map(tuple),
        st.lists(u64, max_size=3).map(tuple),
    ),
    st.builds(NotLeading, queues, u64, st.lists(u64, max_size=5).map(tuple)),
    st.builds(Consume, queues, u64, u64),
    st.builds(
        Deliver, queues, u64, u64, u64, text, text, st.binary(max_size=32), st.binary(max_size=64)
    ),
    st.builds(Settle, queues, u64, st.lists(u64, max_size=5).map(tuple)),
    st.builds(Cancelled, queues, u64, text),
    st.builds(Ask, queues, u64, u64, u64),
    st.builds(
        Answer,
        queues,
        *[u64] * 7,
        text,
        text,
        text,
        st.binary(max_size=32),
        st.binary(max_size=64),
    ),
    st.builds(Resolve, queues, u64, st.lists(u64, max_size=5).map(tuple), st.booleans()),
)


@given(st.lists(messages, max_size=8), st.integers(1, 50))
def test_messages_round_trip_however_the_bytes_are_split(batch: list[Message], step: int) -> None:
    wire = b"".join(encode(m) for m in batch)
    decoder = LinkDecoder()
    out: list[Message] = []
    for at in range(0, len(wire), step):
        out.extend(decoder.feed(wire[at : at + step]))
    assert out == batch
    assert decoder.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = encode(Append(Q, 3, 10, (b"r1", b"r2")))
    decoder = LinkDecoder()
    assert list(decoder.feed(frame[:-1])) == []
    assert decoder.pending == len(frame) - 1
    assert list(decoder.feed(frame[-1:])) == [Append(Q, 3, 10, (b"r1", b"r2"))]
    assert Append(Q, 3, 10, (b"r1", b"r2")).end == 12


def test_an_unknown_frame_type_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="unknown link frame type 99"):
        list(LinkDecoder().feed(FRAME_HEAD.pack(1, 99)))


def test_an_oversized_or_empty_frame_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(LinkError, match="at most 1024"):
        list(LinkDecoder(max_frame=1024).feed(FRAME_HEAD.pack(1025, 2)))
    with pytest.raises(LinkError, match="0 bytes"):
        list(LinkDecoder().feed(FRAME_HEAD.pack(0, 2)))


def test_a_truncated_or_padded_payload_is_a_link_error() -> None:
    frame = encode(Ack(Q, 1, 5))
    short = FRAME_HEAD.pack(len(frame) - 5, frame[4]) + frame[5:-1]
    with pytest.raises(LinkError, match="ends inside a field"):
        list(LinkDecoder().feed(short))
    padded = FRAME_HEAD.pack(len(frame) - 3, frame[4]) + frame[5:] + b"x"
    with pytest.raises(LinkError, match="past its last field"):
        list(LinkDecoder().feed(padded))


def test_a_string_that_is_not_utf8_is_a_link_error() -> None:
    payload = b"\x00\x01" + b"\x00\x01\xff"
    with pytest.raises(LinkError, match="not UTF-8"):
        list(LinkDecoder().feed(FRAME_HEAD.pack(len(payload) + 1, 1) + payload))
