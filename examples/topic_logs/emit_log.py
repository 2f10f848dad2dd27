"""Emit a log line to the ``topic_logs`` topic exchange under a routing key (pika).

The routing key is dot-separated words such as ``<facility>.<severity>``:

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/topic_logs/emit_log.py kern.critical "A critical kernel error"

``--count N`` sends the message N times (numbered), for quick load.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
EXCHANGE = "topic_logs"


def emit(url: str, logs: Iterable[tuple[str, str]], exchange: str = EXCHANGE) -> int:
    """Publish each (routing_key, message) to the topic exchange; return how many were sent."""
    sent = 0
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic")
        # Confirms make the function return only once the broker has routed every message.
        channel.confirm_delivery()
        for routing_key, message in logs:
            channel.basic_publish(exchange=exchange, routing_key=routing_key, body=message.encode())
            sent += 1
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routing_key", nargs="?", default="anonymous.info")
    parser.add_argument("message", nargs="*", default=["Hello World!"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--exchange", default=EXCHANGE)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    text = " ".join(args.message)
    if args.count == 1:
        logs = [(args.routing_key, text)]
    else:
        logs = [(args.routing_key, f"{text} #{i}") for i in range(1, args.count + 1)]
    emit(args.url, logs, args.exchange)
    for routing_key, message in logs:
        print(f" [x] Sent {routing_key}:{message}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
