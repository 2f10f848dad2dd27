"""RPC server: answer Fibonacci requests on ``rpc_queue`` (aio-pika).

Each request's body is an integer n; the reply, sent to the request's ``reply_to`` queue with
the same ``correlation_id``, is fib(n):

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/rpc/server.py

It serves until interrupted, or stops by itself with ``--max-requests N`` or
``--idle-timeout S``. Try it with ``python examples/rpc/client.py 10 20 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence

import aio_pika
import aio_pika.abc

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE = "rpc_queue"
MAX_N = 1000


def fib(n: int) -> int:
    """The n-th Fibonacci number (fib(0) = 0, fib(1) = 1)."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def serve(
    url: str,
    queue_name: str = QUEUE,
    *,
    max_requests: int | None = None,
    idle_timeout: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Answer requests until max_requests are served or none came for idle_timeout; return count."""
    served = 0
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(queue_name)
        async with queue.iterator() as requests:
            if on_ready is not None:
                on_ready()
            while max_requests is None or served < max_requests:
                try:
                    message = await asyncio.wait_for(requests.__anext__(), idle_timeout)
                except (TimeoutError, StopAsyncIteration):
                    break
                await answer(channel, message)
                served += 1
    return served


async def answer(
    channel: aio_pika.abc.AbstractChannel, message: aio_pika.abc.AbstractIncomingMessage
) -> None:
    """Reply to one request, then ack it; a request without reply_to is dropped."""
    async with message.process(requeue=False):
        if message.reply_to is None:
            return
        try:
            n = int(message.body)
            reply = str(fib(n)).encode() if 0 <= n <= MAX_N else b"error: n out of range"
        except ValueError:
            reply = b"error: not an integer"
        await channel.default_exchange.publish(
            aio_pika.Message(reply, correlation_id=message.correlation_id),
            routing_key=message.reply_to,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        served = asyncio.run(
            serve(
                args.url,
                args.queue,
                max_requests=args.max_requests,
                idle_timeout=args.idle_timeout,
                on_ready=lambda: print(" [*] Awaiting RPC requests", flush=True),
            )
        )
        print(f" [*] Served {served} requests", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
