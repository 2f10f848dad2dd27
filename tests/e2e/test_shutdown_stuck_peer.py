"""SIGTERM while a consumer has stopped reading: the final sends have a deadline, the broker exits."""

from __future__ import annotations

import signal
import socket
import subprocess

from broker_process import Serve
from pamqp import commands
from raw_client import RawClient

QUEUE = "stuck-consumer"
COUNT, SIZE = 200, 65536  # 13 MB of deliveries: far more than the socket buffers hold
GRACE = 5.0  # run_node's shutdown grace period


def test_sigterm_exits_although_a_consumer_stopped_reading(serve: Serve) -> None:
    broker = serve()
    stuck = RawClient(broker.host, broker.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.handshake()
    stuck.open_channel(1)
    stuck.send_method(1, commands.Queue.Declare(queue=QUEUE))
    stuck.expect(commands.Queue.DeclareOk)
    stuck.send_method(1, commands.Basic.Consume(queue=QUEUE, no_ack=True))
    stuck.expect(commands.Basic.ConsumeOk)  # from here on it reads nothing

    publisher = RawClient(broker.host, broker.port)
    publisher.handshake()
    publisher.open_channel(1)
    publisher.send_method(1, commands.Confirm.Select())
    publisher.expect(commands.Confirm.SelectOk)
    for _ in range(COUNT):
        publisher.publish(1, QUEUE, b"x" * SIZE)
    acked = 0
    while acked < COUNT:  # every message routed: the deliveries fill the stuck socket
        ack = publisher.expect(commands.Basic.Ack, timeout=30)
        acked = ack.delivery_tag if ack.multiple else acked + 1

    broker.proc.send_signal(signal.SIGTERM)
    try:
        code = broker.proc.wait(timeout=GRACE + 25)
    except subprocess.TimeoutExpired:
        code = None
    log = broker.output()
    assert code == 0, f"the broker did not exit after SIGTERM:\n{log[-2000:]}"
    assert "amqplite stopped" in log
    assert "Traceback" not in log
