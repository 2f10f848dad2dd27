"""One consumer-group member as its own process (pika), for tests/e2e/test_pika_consumer_groups.py.

It consumes every partition queue named on the command line with `x-consumer-group`, prints
`ready` once subscribed, then for each message (body "<key>:<seq>") does its work, prints
`got <monotonic ns> <queue> <key> <seq> <redelivered>` and acks. With --die-after N it SIGKILLs
itself after printing its Nth message and before acking it (a crash mid-stream).
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import pika


def main() -> None:
    """Parse the arguments and consume until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("group")
    parser.add_argument("queues", help="comma-separated partition queues")
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args()
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    handled = 0

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        nonlocal handled
        key, seq = body.decode().split(":")
        if args.work_ms:
            time.sleep(args.work_ms / 1000)  # the member's work on the message
        queue = method.consumer_tag  # type: ignore[attr-defined]
        redelivered = int(method.redelivered)  # type: ignore[attr-defined]
        print(f"got {time.monotonic_ns()} {queue} {key} {seq} {redelivered}", flush=True)
        handled += 1
        if args.die_after and handled >= args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    for queue in args.queues.split(","):
        channel.basic_consume(
            queue, on_message, consumer_tag=queue, arguments={"x-consumer-group": args.group}
        )
    print("ready", flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main()
