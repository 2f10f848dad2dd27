"""A routing key that is not UTF-8 (AMQP shortstr is bytes) is journaled and comes back byte for byte."""

from __future__ import annotations

import struct
from pathlib import Path

from broker_process import start_broker
from pamqp import commands
from raw_client import (
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_METHOD,
    RawClient,
    body_frame,
    raw_frame,
    raw_method_frame,
    shortstr,
)

KEY = b"key-\xff\xfe-\xc3"  # not UTF-8
EXCHANGE = "keys-fanout"
QUEUE = "keys-durable"
BODY = b"persistent body"


def _publish_persistent(client: RawClient, exchange: bytes, routing_key: bytes) -> None:
    """basic.publish with raw exchange and routing key bytes, delivery_mode 2, one body frame."""
    args = struct.pack(">H", 0) + shortstr(exchange) + shortstr(routing_key) + b"\x00"
    header = struct.pack(">HHQH", 60, 0, len(BODY), 0x1000) + b"\x02"  # delivery-mode only
    client.send(
        raw_method_frame(1, 60, 40, args) + raw_frame(FRAME_HEADER, 1, header) + body_frame(1, BODY)
    )


def _read_raw(client: RawClient) -> tuple[int, bytes]:
    """The next frame's type and payload, not decoded (pamqp refuses shortstrs that are not UTF-8)."""
    frame_type, _channel, size = struct.unpack(">BHI", client.read_exact(7))
    payload = client.read_exact(size + 1)
    return frame_type, payload[:-1]


def _get_raw(client: RawClient) -> tuple[bytes, bytes, bytes]:
    """basic.get: (exchange bytes, routing key bytes, body) parsed from the raw get-ok frames."""
    client.send(
        raw_method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(QUEUE.encode()) + b"\x01")
    )
    method = _read_raw(client)
    assert method[0] == FRAME_METHOD, method
    assert method[1][:4] == struct.pack(">HH", 60, 71), method  # basic.get-ok
    payload = method[1]
    at = 4 + 8 + 1
    exchange = payload[at + 1 : at + 1 + payload[at]]
    at += 1 + payload[at]
    routing_key = payload[at + 1 : at + 1 + payload[at]]
    header = _read_raw(client)
    assert header[0] == FRAME_HEADER
    body = _read_raw(client)
    assert body[0] == FRAME_BODY
    return exchange, routing_key, body[1]


def test_non_utf8_routing_key_of_a_persistent_message_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    broker = start_broker(data_dir, management=False)
    try:
        with RawClient.for_broker(broker) as client:
            client.handshake()
            client.open_channel()
            client.send_method(
                1,
                commands.Exchange.Declare(exchange=EXCHANGE, exchange_type="fanout", durable=True),
            )
            client.expect(commands.Exchange.DeclareOk)
            client.send_method(1, commands.Queue.Declare(queue=QUEUE, durable=True))
            client.expect(commands.Queue.DeclareOk)
            client.send_method(1, commands.Queue.Bind(queue=QUEUE, exchange=EXCHANGE))
            client.expect(commands.Queue.BindOk)
            client.send_method(1, commands.Confirm.Select())
            client.expect(commands.Confirm.SelectOk)
            _publish_persistent(client, EXCHANGE.encode(), KEY)
            ack = client.expect(commands.Basic.Ack)  # journaled and fsynced, not a 541
            assert ack.delivery_tag == 1
        assert broker.stop() == 0
        broker = start_broker(data_dir, management=False)
        with RawClient.for_broker(broker) as client:
            client.handshake()
            client.open_channel()
            exchange, routing_key, body = _get_raw(client)
        assert (exchange, routing_key, body) == (EXCHANGE.encode(), KEY, BODY)
    finally:
        broker.stop()
