"""Receive the logs whose routing keys match the binding keys given on the command line (pika).

``*`` matches exactly one word and ``#`` zero or more words:

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/topic_logs/receive_logs.py "kern.*" "*.critical"

Each receiver gets its own exclusive, server-named queue bound once per key. It runs until
interrupted, or stops by itself with ``--max-messages N`` or ``--idle-timeout S``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
EXCHANGE = "topic_logs"


def receive(
    url: str,
    binding_keys: Sequence[str],
    exchange: str = EXCHANGE,
    *,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    on_ready: Callable[[], None] | None = None,
    on_log: Callable[[str, str], None] | None = None,
) -> list[tuple[str, str]]:
    """Collect (routing_key, message) pairs until max_messages, or idle_timeout without any."""
    if not binding_keys:
        raise ValueError("at least one binding key is needed")
    received: list[tuple[str, str]] = []
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic")
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        for binding_key in binding_keys:
            channel.queue_bind(exchange=exchange, queue=queue, routing_key=binding_key)
        if on_ready is not None:
            on_ready()
        # The generator yields (None, None, None) after inactivity_timeout seconds of silence.
        for method, _properties, body in channel.consume(
            queue, auto_ack=True, inactivity_timeout=idle_timeout
        ):
            if method is None:
                break
            log = (method.routing_key, body.decode())
            received.append(log)
            if on_log is not None:
                on_log(*log)
            if max_messages is not None and len(received) >= max_messages:
                break
        channel.cancel()
    return received


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binding_keys", nargs="+", metavar="binding_key")
    parser.add_argument("--exchange", default=EXCHANGE)
    parser.add_argument("--max-messages", type=int, default=None)
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        received = receive(
            args.url,
            args.binding_keys,
            args.exchange,
            max_messages=args.max_messages,
            idle_timeout=args.idle_timeout,
            on_ready=lambda: print(" [*] Waiting for logs", flush=True),
            on_log=lambda key, message: print(f" [x] {key}:{message}", flush=True),
        )
    except KeyboardInterrupt:
        return 130
    print(f" [*] Received {len(received)} logs in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
