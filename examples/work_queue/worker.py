"""Work queue worker: take one job at a time (prefetch 1), do it, then ack it (pika).

Start several workers; the broker hands each job to exactly one of them, and a job whose
worker dies before acking goes to another:

    AMQP_URL=amqp://guest:guest@localhost:5672/%2F python examples/work_queue/worker.py

It runs until interrupted, or stops by itself with ``--max-jobs N`` or ``--idle-timeout S``
(no job for S seconds). Each ``.`` in a job's body is ``--seconds-per-dot`` of work.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import pika
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE = "task_queue"


def run_worker(
    url: str,
    queue: str = QUEUE,
    *,
    max_jobs: int | None = None,
    idle_timeout: float | None = None,
    seconds_per_dot: float = 0.0,
    on_ready: Callable[[], None] | None = None,
    on_receive: Callable[[str], None] | None = None,
    on_job: Callable[[str], None] | None = None,
) -> list[str]:
    """Consume jobs until max_jobs are done or none came for idle_timeout; return the jobs done."""
    done: list[str] = []
    last_activity = time.monotonic()

    def on_message(
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        nonlocal last_activity
        job = body.decode()
        if on_receive is not None:
            on_receive(job)
        time.sleep(job.count(".") * seconds_per_dot)
        # Ack only after the work is done: a crash before this line requeues the job.
        channel.basic_ack(delivery_tag=method.delivery_tag)
        done.append(job)
        last_activity = time.monotonic()
        if on_job is not None:
            on_job(job)

    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue=queue, on_message_callback=on_message)
        if on_ready is not None:
            on_ready()
        last_activity = time.monotonic()
        while max_jobs is None or len(done) < max_jobs:
            connection.process_data_events(time_limit=0.05)
            if idle_timeout is not None and time.monotonic() - last_activity > idle_timeout:
                break
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
    )
    parser.add_argument("--seconds-per-dot", type=float, default=1.0)
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    try:
        done = run_worker(
            args.url,
            args.queue,
            max_jobs=args.max_jobs,
            idle_timeout=args.idle_timeout,
            seconds_per_dot=args.seconds_per_dot,
            on_ready=lambda: print(" [*] Waiting for jobs", flush=True),
            on_receive=lambda job: print(f" [x] Received {job}", flush=True),
            on_job=lambda job: print(f" [x] Done {job}", flush=True),
        )
    except KeyboardInterrupt:
        return 130
    print(f" [*] Finished after {len(done)} jobs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
