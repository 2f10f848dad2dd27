"""A Celery app whose broker is amqplite, with results sent back over AMQP (``rpc://``).

Run a worker from the ``examples`` directory, then call a task from Python:

    cd examples
    AMQP_URL=amqp://guest:guest@localhost:5672// celery -A celery_app.tasks worker --pool=solo -l info
    python -c "from celery_app.tasks import add; print(add.delay(2, 3).get(timeout=10))"

See ``celery_app/README.md`` for more.
"""

from __future__ import annotations

import os

from celery import Celery

DEFAULT_URL = "amqp://guest:guest@localhost:5672//"


def create_app(broker_url: str) -> Celery:
    """A Celery app on broker_url, with the example tasks registered under fixed names."""
    app = Celery("celery_app", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Ack after the task ran, so a worker that dies mid-task leaves it for another worker.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=300,
    )

    @app.task(name="celery_app.tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

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

    return app


app = create_app(os.environ.get("AMQP_URL", DEFAULT_URL))
add = app.tasks["celery_app.tasks.add"]
word_count = app.tasks["celery_app.tasks.word_count"]
fail = app.tasks["celery_app.tasks.fail"]
