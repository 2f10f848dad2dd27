"""decode_method / encode_method: hot methods by hand, the long tail through pamqp's classes."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import base, commands, frame

from amqplite.protocol import (
    BasicAck,
    BasicNack,
    BasicPublish,
    BasicReject,
    ConnectionException,
    ReplyCode,
    carries_content,
    decode_method,
    encode_method,
    method_ids,
)
from amqplite.protocol.methods import encode_method_payload


@contextmanager
def pamqp_unvalidated() -> Iterator[None]:
    """Let pamqp marshal any names (its pattern refuses names RabbitMQ accepts)."""
    with ExitStack() as stack:
        for cls in commands.INDEX_MAPPING.values():
            stack.enter_context(mock.patch.object(cls, "validate", return_value=None))
        yield


@pytest.fixture(autouse=True, scope="module")
def _pamqp_accepts_any_name() -> Iterator[None]:
    """pamqp checks names against a pattern stricter than RabbitMQ's; these tests need any name."""
    with pamqp_unvalidated():
        yield


def payload_of(method: base.Frame) -> bytes:
    """The method frame payload pamqp marshals (ids and arguments)."""
    return frame.marshal(method, 1)[7:-1]


def pamqp_unmarshal(payload: bytes) -> base.Frame:
    """pamqp's own reading of a method frame payload."""
    _, _, method = frame.unmarshal(
        b"\x01\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce"
    )
    assert isinstance(method, base.Frame)
    return method


def _fit(text: str, limit: int = 255) -> str:
    """Cut text to at most ``limit`` UTF-8 bytes on a character boundary."""
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


shortstrs = st.text(max_size=255).map(_fit)
table_values = st.text(max_size=20) | st.booleans()
tables = st.dictionaries(
    st.text(min_size=1, max_size=20).map(lambda s: _fit(s, 128)), table_values, max_size=4
).map(lambda d: dict(sorted(d.items())))  # pamqp writes keys sorted; we keep their order
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 65535),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**63 - 1),  # pamqp packs longlong signed
    "shortstr": shortstrs,
    "longstr": st.text(max_size=300),
    "table": tables,
}
ALL_METHODS = sorted(commands.INDEX_MAPPING.values(), key=lambda cls: cls.index)
HOT_INDEXES = {BasicPublish.index, BasicAck.index, BasicNack.index, BasicReject.index}
LONG_TAIL = [cls for cls in ALL_METHODS if cls.index not in HOT_INDEXES]


@st.composite
def pamqp_methods(draw: st.DrawFn, cls: type[base.Frame]) -> base.Frame:
    """A pamqp method object of the class with random field values."""
    method = cls.__new__(cls)
    for attr in cls.__slots__:
        value = 0 if attr == "ticket" else draw(STRATEGIES[cls.amqp_type(attr)])
        setattr(method, attr, value)
    return method


# ---------------------------------------------------------------------------------------------
# the long tail


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pamqp warns on Basic.RecoverAsync
@pytest.mark.parametrize("cls", LONG_TAIL, ids=lambda cls: cls.name)
@settings(max_examples=25)
@given(data=st.data())
def test_every_long_tail_method_decodes_as_pamqp_reads_it(
    cls: type[base.Frame], data: st.DataObject
) -> None:
    payload = payload_of(data.draw(pamqp_methods(cls)))
    decoded = decode_method(payload)
    assert isinstance(decoded, cls)
    assert dict(decoded) == dict(pamqp_unmarshal(payload))


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda cls: cls.name)
@settings(max_examples=25)
@given(data=st.data())
def test_every_method_encodes_byte_identical_to_pamqp(
    cls: type[base.Frame], data: st.DataObject
) -> None:
    method = data.draw(pamqp_methods(cls))
    expected = frame.marshal(method, 5)
    assert encode_method(5, method) == expected
    assert encode_method(5, decode_method(expected[7:-1])) == expected


def test_decoded_long_tail_method_is_the_pamqp_class() -> None:
    decoded = decode_method(
        payload_of(commands.Queue.Declare(queue="q", durable=True, arguments={"x-max-priority": 5}))
    )
    assert isinstance(decoded, commands.Queue.Declare)
    assert (decoded.queue, decoded.durable, decoded.exclusive, decoded.arguments) == (
        "q",
        True,
        False,
        {"x-max-priority": 5},
    )


@pytest.mark.parametrize(
    "name", ["émoji ☃", "a*b?c", "x" * 255, "with/slash and spaces", "amq.gen-ä"]
)
def test_names_pamqp_would_refuse_but_rabbitmq_accepts_decode_and_encode(name: str) -> None:
    payload = payload_of(commands.Queue.Declare(queue=_fit(name)))
    decoded = decode_method(payload)
    assert isinstance(decoded, commands.Queue.Declare)
    assert decoded.queue == _fit(name)
    reply = commands.Queue.DeclareOk.__new__(commands.Queue.DeclareOk)
    reply.queue, reply.message_count, reply.consumer_count = decoded.queue, 0, 0
    assert decode_method(encode_method(1, reply)[7:-1]).queue == _fit(name)  # type: ignore[union-attr]


def test_long_string_that_is_not_utf8_decodes_to_bytes_like_pamqp() -> None:
    response = b"\x00\xff\xfe"
    payload = (
        struct.pack(">HHI", 10, 11, 0)
        + b"\x05PLAIN"
        + struct.pack(">I", 3)
        + response
        + b"\x05en_US"
    )
    decoded = decode_method(payload)
    assert isinstance(decoded, commands.Connection.StartOk)
    assert decoded.response == response
    assert encode_method(0, decoded)[7:-1] == payload


def test_overlong_reply_text_is_cut_to_255_bytes_ending_with_dots() -> None:
    close = commands.Channel.Close(
        reply_code=404, reply_text="NOT_FOUND - " + "é" * 200, class_id=50, method_id=10
    )
    decoded = decode_method(encode_method(1, close)[7:-1])
    assert isinstance(decoded, commands.Channel.Close)
    assert len(decoded.reply_text.encode()) <= 255
    assert decoded.reply_text.startswith("NOT_FOUND - é")
    assert decoded.reply_text.endswith("...")
    assert (decoded.reply_code, decoded.class_id, decoded.method_id) == (404, 50, 10)


# ---------------------------------------------------------------------------------------------
# the hot methods


raw_shortstrs = st.binary(max_size=255)


@given(exchange=shortstrs, routing_key=shortstrs, mandatory=st.booleans(), immediate=st.booleans())
def test_basic_publish_decodes_as_pamqp_reads_it(
    exchange: str, routing_key: str, mandatory: bool, immediate: bool
) -> None:
    payload = payload_of(commands.Basic.Publish(0, exchange, routing_key, mandatory, immediate))
    assert decode_method(payload) == BasicPublish(exchange, routing_key, mandatory, immediate)
    assert (
        encode_method_payload(BasicPublish(exchange, routing_key, mandatory, immediate)) == payload
    )


@given(exchange=raw_shortstrs, routing_key=raw_shortstrs)
def test_basic_publish_names_that_are_not_utf8_are_accepted_and_kept_byte_for_byte(
    exchange: bytes, routing_key: bytes
) -> None:
    payload = (
        struct.pack(">HHH", 60, 40, 0)
        + bytes([len(exchange)])
        + exchange
        + bytes([len(routing_key)])
        + routing_key
        + b"\x00"
    )
    decoded = decode_method(payload)
    assert isinstance(decoded, BasicPublish)
    assert encode_method_payload(decoded) == payload


@given(tag=st.integers(0, 2**63 - 1), multiple=st.booleans(), requeue=st.booleans())
def test_ack_nack_reject_decode_as_pamqp_reads_them(
    tag: int, multiple: bool, requeue: bool
) -> None:
    assert decode_method(payload_of(commands.Basic.Ack(tag, multiple))) == BasicAck(tag, multiple)
    assert decode_method(payload_of(commands.Basic.Nack(tag, multiple, requeue))) == BasicNack(
        tag, multiple, requeue
    )
    assert decode_method(payload_of(commands.Basic.Reject(tag, requeue))) == BasicReject(
        tag, requeue
    )


@given(tag=st.integers(0, 2**63 - 1), multiple=st.booleans(), requeue=st.booleans())
def test_ack_nack_reject_encode_byte_identical_to_pamqp(
    tag: int, multiple: bool, requeue: bool
) -> None:
    assert encode_method(1, BasicAck(tag, multiple)) == frame.marshal(
        commands.Basic.Ack(tag, multiple), 1
    )
    assert encode_method(1, BasicNack(tag, multiple, requeue)) == frame.marshal(
        commands.Basic.Nack(tag, multiple, requeue), 1
    )
    assert encode_method(1, BasicReject(tag, requeue)) == frame.marshal(
        commands.Basic.Reject(tag, requeue), 1
    )


def test_delivery_tags_are_unsigned_64_bit() -> None:
    payload = struct.pack(">HHQB", 60, 80, 2**64 - 1, 1)
    assert decode_method(payload) == BasicAck(2**64 - 1, True)
    assert encode_method_payload(BasicAck(2**64 - 1, True)) == payload


def test_reserved_bits_are_ignored() -> None:
    assert decode_method(struct.pack(">HHQB", 60, 80, 1, 0xFE)) == BasicAck(1, False)
    assert decode_method(struct.pack(">HHHBB", 60, 40, 0, 0, 0) + b"\xfd") == BasicPublish(
        "", "", True, False
    )
    qos = decode_method(struct.pack(">HHIHB", 60, 10, 0, 5, 0xFE))
    assert isinstance(qos, commands.Basic.Qos)
    assert (qos.prefetch_count, qos.global_) == (5, False)


def test_hot_methods_have_pamqps_index_and_name() -> None:
    for ours, theirs in [
        (BasicPublish, commands.Basic.Publish),
        (BasicAck, commands.Basic.Ack),
        (BasicNack, commands.Basic.Nack),
        (BasicReject, commands.Basic.Reject),
    ]:
        assert (ours.index, ours.name) == (theirs.index, theirs.name)


def test_method_ids_and_content_flags() -> None:
    assert method_ids(BasicPublish()) == (60, 40)
    assert method_ids(commands.Queue.Declare()) == (50, 10)
    assert carries_content(BasicPublish())
    assert carries_content(commands.Basic.Deliver())
    assert not carries_content(BasicAck())
    assert not carries_content(commands.Basic.Get())


# ---------------------------------------------------------------------------------------------
# errors


def decode_error(payload: bytes) -> ConnectionException:
    """The ConnectionException decode_method raises for a payload."""
    with pytest.raises(ConnectionException) as info:
        decode_method(payload)
    return info.value


@pytest.mark.parametrize(("class_id", "method_id"), [(60, 99), (77, 10), (10, 99), (0, 0)])
def test_unknown_method_is_not_implemented_with_its_ids(class_id: int, method_id: int) -> None:
    exc = decode_error(struct.pack(">HH", class_id, method_id))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (
        ReplyCode.NOT_IMPLEMENTED,
        class_id,
        method_id,
    )


@pytest.mark.parametrize(
    "method",
    [
        commands.Queue.Declare(
            queue="a-queue",
            durable=True,
            arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"},
        ),
        commands.Basic.Consume(queue="q", consumer_tag="ctag", arguments={"x-priority": 3}),
        commands.Connection.StartOk(
            client_properties={"product": "p", "capabilities": {"a": True}},
            mechanism="PLAIN",
            response="\x00u\x00p",
        ),
        commands.Basic.Publish(exchange="ex", routing_key="rk"),
        commands.Basic.Ack(delivery_tag=5),
        commands.Basic.Nack(delivery_tag=5),
        commands.Basic.Reject(delivery_tag=5),
        commands.Exchange.Bind(destination="d", source="s", routing_key="r"),
    ],
    ids=lambda m: m.name,
)
def test_every_truncation_and_trailing_byte_is_a_frame_error_with_the_ids(
    method: base.Frame,
) -> None:
    payload = payload_of(method)
    ids = (method.index >> 16, method.index & 0xFFFF)
    for cut in range(4, len(payload)):
        exc = decode_error(payload[:cut])
        assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.FRAME_ERROR, *ids), cut
    exc = decode_error(payload + b"\x00")
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.FRAME_ERROR, *ids)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x3c\x00"])
def test_payload_shorter_than_the_ids_is_a_frame_error(payload: bytes) -> None:
    assert decode_error(payload).reply_code == ReplyCode.FRAME_ERROR


def test_shortstr_that_is_not_utf8_in_a_long_tail_method_is_a_frame_error() -> None:
    exc = decode_error(struct.pack(">HHH", 50, 10, 0) + b"\x02\xff\xfe" + b"\x00" + bytes(4))
    assert exc.reply_code == ReplyCode.FRAME_ERROR
    assert "UTF-8" in exc.reply_text


def _declare_with_table(table: bytes) -> bytes:
    return (
        struct.pack(">HHH", 50, 10, 0) + b"\x01q" + b"\x00" + struct.pack(">I", len(table)) + table
    )


@pytest.mark.parametrize(
    "table",
    [
        b"\x01aZ",  # unknown field type
        b"\x01aI\x00",  # value cut by the table end
        b"\x01\xfft\x01",  # key not UTF-8
        b"\x02a",  # key longer than the table
    ],
)
def test_bad_argument_table_is_a_frame_error(table: bytes) -> None:
    exc = decode_error(_declare_with_table(table))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.FRAME_ERROR, 50, 10)


def test_deeply_nested_argument_table_is_a_frame_error_not_a_recursion_error() -> None:
    inner = b""
    for _ in range(5000):
        inner = b"\x01aF" + struct.pack(">I", len(inner)) + inner
    assert decode_error(_declare_with_table(inner)).reply_code == ReplyCode.FRAME_ERROR


def test_huge_timestamp_in_arguments_is_kept_as_seconds() -> None:
    table = b"\x01tT" + struct.pack(">Q", 2**63 + 5)
    decoded = decode_method(_declare_with_table(table))
    assert isinstance(decoded, commands.Queue.Declare)
    assert decoded.arguments == {"t": 2**63 + 5}


@settings(max_examples=300)
@given(payload=st.binary(max_size=64))
def test_random_payloads_raise_only_connection_exceptions(payload: bytes) -> None:
    with contextlib.suppress(ConnectionException):
        decode_method(payload)


@settings(max_examples=300)
@given(cls=st.sampled_from(ALL_METHODS), tail=st.binary(max_size=48))
def test_random_arguments_raise_only_connection_exceptions(
    cls: type[base.Frame], tail: bytes
) -> None:
    code = None
    try:
        decode_method(struct.pack(">I", cls.index) + tail)
    except ConnectionException as exc:
        code = exc.reply_code
    assert code in {None, ReplyCode.FRAME_ERROR}


def test_methods_written_by_pika_decode() -> None:
    import pika.frame
    import pika.spec

    declare = pika.spec.Queue.Declare(
        queue="q", durable=True, arguments={"x-max-priority": 10, "x-queue-type": "classic"}
    )
    decoded = decode_method(pika.frame.Method(1, declare).marshal()[7:-1])
    assert isinstance(decoded, commands.Queue.Declare)
    assert (decoded.queue, decoded.durable, decoded.arguments) == (
        "q",
        True,
        {"x-max-priority": 10, "x-queue-type": "classic"},
    )
    publish = pika.spec.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)
    assert decode_method(pika.frame.Method(1, publish).marshal()[7:-1]) == BasicPublish(
        "ex", "rk", True, False
    )
    nack = pika.spec.Basic.Nack(delivery_tag=9, multiple=True, requeue=False)
    assert decode_method(pika.frame.Method(1, nack).marshal()[7:-1]) == BasicNack(9, True, False)
