"""Work queue producer: publish persistent jobs to a durable queue (pika).

Run a worker or two first (``python examples/work_queue/worker.py``), then:

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/work_queue/producer.py --count 10

Each job is a string like ``job-3..``; every ``.`` stands for a unit of work a worker sleeps
through. With ``--count N`` the producer sends ``job-1`` .. ``job-N``; positional arguments
are sent as jobs as they are.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE = "task_queue"


def declare_queue(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
    """Declare the durable job queue (producer and worker both do, whoever starts first)."""
    channel.queue_declare(queue=queue, durable=True)


def make_jobs(count: int, dots: int = 0) -> list[str]:
    """Job names job-1 .. job-count, each with `dots` units of work."""
    return [f"job-{i}" + "." * dots for i in range(1, count + 1)]


def publish_jobs(url: str, jobs: Iterable[str], queue: str = QUEUE) -> int:
    """Publish each job as a persistent message with publisher confirms; return how many."""
    sent = 0
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        declare_queue(channel, queue)
        # With confirms on, basic_publish returns only once the broker has taken the message.
        channel.confirm_delivery()
        for job in jobs:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=job.encode(),
                properties=pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent, content_type="text/plain"
                ),
            )
            sent += 1
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", help="job bodies to send (default: job-1..job-N)")
    parser.add_argument("--count", type=int, default=5, help="number of jobs when none are given")
    parser.add_argument("--dots", type=int, default=0, help="units of work per generated job")
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    jobs = args.jobs or make_jobs(args.count, args.dots)
    sent = publish_jobs(args.url, jobs, args.queue)
    print(f" [x] Sent {sent} jobs to {args.queue}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
