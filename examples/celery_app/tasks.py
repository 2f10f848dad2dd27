"""A Celery app whose broker is amqplite, with results sent back over AMQP (``rpc://``).

Run a worker from the ``examples`` directory, then call a task from Python:

    cd examples
    AMQP_URL=amqp://guest:guest@localhost:5672// celery -A celery_app.tasks worker --pool=solo -l info
    python -c "from celery_app.tasks import add; print(add.delay(2, 3).get(timeout=10))"

See ``celery_app/README.md`` for more.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task, chain

DEFAULT_URL = "amqp://guest:guest@localhost:5672//"
DEFAULT_QUEUE = "celery"
# Queues are declared with x-max-priority 9: a task sent with priority=9 overtakes priority=0.
MAX_PRIORITY = 9

# The order in which this worker process ran its tasks (the solo pool runs one at a time).
_run_order = itertools.count(1)


def create_app(broker_url: str, queue: str = DEFAULT_QUEUE) -> Celery:
    """A Celery app on broker_url whose tasks go to `queue`, with the example tasks registered."""
    app = Celery("celery_app", broker=broker_url, backend="rpc://")
    app.conf.update(
        # Where tasks go, including the ones a worker sends itself (the next step of a chain).
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Ack after the task ran, so a worker that dies mid-task leaves it for another worker.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # Every queue the app declares is a priority queue; tasks are priority 0 unless sent higher.
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=0,
        # Callers see STARTED (with the worker's pid) while a task runs.
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        result_expires=300,
    )

    # A periodic task for `celery beat` (or a worker started with -B), when asked for.
    beat_seconds = os.environ.get("CELERY_BEAT_SECONDS")
    if beat_seconds:
        app.conf.beat_schedule = {
            "job-every-few-seconds": {
                "task": "celery_app.tasks.job",
                "schedule": float(beat_seconds),
                "args": ("beat",),
            }
        }

    @app.task(name="celery_app.tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    @app.task(name="celery_app.tasks.mul", shared=False)
    def mul(x: int, y: int) -> int:
        """Multiply two numbers."""
        return x * y

    @app.task(name="celery_app.tasks.total", shared=False)
    def total(numbers: list[int]) -> int:
        """Sum a list of numbers (the end of a chain fed by a group)."""
        return sum(numbers)

    @app.task(name="celery_app.tasks.word_count", shared=False)
    def word_count(text: str) -> dict[str, int]:
        """Count the words of a text."""
        counts: dict[str, int] = {}
        for word in text.lower().split():
            counts[word] = counts.get(word, 0) + 1
        return counts

    @app.task(name="celery_app.tasks.fail", shared=False)
    def fail(message: str) -> None:
        """Raise, so callers can see a task error travel back through the result backend."""
        raise ValueError(message)

    @app.task(name="celery_app.tasks.flaky", bind=True, shared=False, max_retries=5)
    def flaky(self: Task, failures: int, countdown: float = 0.5) -> dict[str, Any]:
        """Fail `failures` times, each time retrying after `countdown` seconds, then succeed."""
        if self.request.retries < failures:
            raise self.retry(exc=ConnectionError("service unavailable"), countdown=countdown)
        return {"retries": self.request.retries, "hostname": self.request.hostname}

    @app.task(name="celery_app.tasks.job", shared=False)
    def job(label: str) -> dict[str, Any]:
        """Return the label and the place this task took in its worker's run order."""
        return {"label": label, "order": next(_run_order), "pid": os.getpid()}

    @app.task(name="celery_app.tasks.wait_for_file", bind=True, shared=False)
    def wait_for_file(self: Task, path: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until a file appears (an upload, say), then return its size and who processed it."""
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within {timeout}s")
            time.sleep(0.05)
        return {
            "size": Path(path).stat().st_size,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "redelivered": bool(self.request.delivery_info.get("redelivered")),
        }

    return app


def add_then_multiply(app: Celery, x: int, y: int, factor: int) -> Any:
    """The chain add(x, y) | mul(factor): the second task gets the first one's result."""
    return chain(
        app.tasks["celery_app.tasks.add"].s(x, y), app.tasks["celery_app.tasks.mul"].s(factor)
    )


app = create_app(
    os.environ.get("AMQP_URL", DEFAULT_URL), os.environ.get("CELERY_QUEUE", DEFAULT_QUEUE)
)
add = app.tasks["celery_app.tasks.add"]
mul = app.tasks["celery_app.tasks.mul"]
total = app.tasks["celery_app.tasks.total"]
word_count = app.tasks["celery_app.tasks.word_count"]
fail = app.tasks["celery_app.tasks.fail"]
flaky = app.tasks["celery_app.tasks.flaky"]
job = app.tasks["celery_app.tasks.job"]
wait_for_file = app.tasks["celery_app.tasks.wait_for_file"]
