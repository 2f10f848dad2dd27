"""RPC client: ask the server for Fibonacci numbers and wait for the answers (aio-pika).

Replies come back on an exclusive, server-named callback queue; each request carries
``reply_to`` (that queue) and a fresh ``correlation_id`` that pairs the reply with its call:

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/rpc/client.py 10 20 30

With ``--count N`` it asks for fib(0) .. fib(N-1). Each call gives up after ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import Sequence
from types import TracebackType

import aio_pika
import aio_pika.abc

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE = "rpc_queue"


class FibonacciRpcClient:
    """Sends requests to the RPC queue and matches replies to calls by correlation_id."""

    def __init__(self, url: str, queue_name: str = QUEUE) -> None:
        self.url = url
        self.queue_name = queue_name
        self.pending: dict[str, asyncio.Future[bytes]] = {}
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.callback_queue: aio_pika.abc.AbstractQueue | None = None

    async def connect(self) -> FibonacciRpcClient:
        """Open the connection and start consuming the exclusive callback queue."""
        # A plain (non-robust) connection, so the broker names the callback queue.
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel()
        self.callback_queue = await self.channel.declare_queue("", exclusive=True)
        await self.callback_queue.consume(self.on_response, no_ack=True)
        return self

    async def close(self) -> None:
        """Close the connection (the callback queue goes with it)."""
        if self.connection is not None:
            await self.connection.close()

    async def __aenter__(self) -> FibonacciRpcClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def on_response(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """Resolve the call this reply belongs to; ignore replies to nobody."""
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, n: int, reply_timeout: float = 10.0) -> int:
        """Ask for fib(n) and wait up to reply_timeout seconds for the answer."""
        if self.channel is None or self.callback_queue is None:
            raise RuntimeError("not connected: use `async with FibonacciRpcClient(...)`")
        correlation_id = str(uuid.uuid4())
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[correlation_id] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                str(n).encode(),
                content_type="text/plain",
                correlation_id=correlation_id,
                reply_to=self.callback_queue.name,
            ),
            routing_key=self.queue_name,
        )
        try:
            reply = await asyncio.wait_for(future, reply_timeout)
        finally:
            self.pending.pop(correlation_id, None)
        return int(reply)


async def request_many(
    url: str, numbers: Sequence[int], queue_name: str = QUEUE, reply_timeout: float = 10.0
) -> list[int]:
    """Ask for fib of every number at once, concurrently; return the answers in order."""
    async with FibonacciRpcClient(url, queue_name) as client:
        return list(await asyncio.gather(*(client.call(n, reply_timeout) for n in numbers)))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", type=int)
    parser.add_argument("--count", type=int, default=10, help="ask for fib(0..N-1) if no numbers")
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    numbers = args.numbers or list(range(args.count))
    answers = asyncio.run(request_many(args.url, numbers, args.queue, args.timeout))
    for n, answer in zip(numbers, answers, strict=True):
        print(f" [.] fib({n}) = {answer}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
