"""Celery end to end: real `celery worker` processes of examples/celery_app on the broker."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pika
import pytest
from celery import group
from celery_helpers import EXAMPLES, CeleryWorker, client_app, example_tasks, poll, result_of
from pika_helpers import watchdog

# Worker processes take a second or two to start; each test here starts at most two.
pytestmark = pytest.mark.celery


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """A longer watchdog than the other e2e tests: a test may start two worker processes."""
    with watchdog(90.0):
        yield


def unique(prefix: str) -> str:
    """A queue or worker name no other run on the same broker uses."""
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def delete_queue_and_exchange(url: str, name: str) -> None:
    """Delete the durable queue and exchange a Celery app declared for `name`."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


@pytest.fixture
def workers(broker: Any, tmp_path: Path) -> Iterator[list[CeleryWorker]]:
    """Workers a test started; stopped (or killed) and their queue deleted at teardown."""
    started: list[CeleryWorker] = []
    yield started
    for worker in started:
        app = client_app(broker.url, worker.queue)
        try:
            worker.stop(app)
        finally:
            app.close()
    for name in {worker.queue for worker in started}:
        delete_queue_and_exchange(broker.url, name)


def start_worker(
    broker: Any, workers: list[CeleryWorker], path: Path, queue_name: str, *extra: str
) -> CeleryWorker:
    """Start a worker on queue_name, wait until it consumes, and register it for teardown."""
    hostname = unique("w") + "@e2e"
    worker = CeleryWorker(broker.url, queue_name, hostname, path / f"{hostname}.log", *extra)
    workers.append(worker)
    worker.wait_ready()
    return worker


@pytest.fixture(scope="module")
def shared_worker(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """One worker, sending task events (-E), for the tests that need no worker of their own."""
    name = unique("celery-e2e")
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    worker = CeleryWorker(broker.url, name, f"{name}@e2e", log, "--task-events")
    app = client_app(broker.url, name)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop(app)
        app.close()
        delete_queue_and_exchange(broker.url, name)


@pytest.fixture
def app(broker: Any, shared_worker: CeleryWorker) -> Iterator[celery.Celery]:
    """A client app whose tasks go to the shared worker's queue."""
    client = client_app(broker.url, shared_worker.queue)
    yield client
    client.close()


def test_celery_tasks_return_their_results_through_the_rpc_backend(app, shared_worker):
    results = [app.tasks["celery_app.tasks.add"].delay(i, i) for i in range(10)]
    counted = app.tasks["celery_app.tasks.word_count"].delay("to be or not to be")
    assert [result_of(r, shared_worker) for r in results] == [2 * i for i in range(10)]
    assert result_of(counted, shared_worker) == {"to": 2, "be": 2, "or": 1, "not": 1}
    assert all(r.state == "SUCCESS" for r in results)


def test_celery_task_error_is_raised_by_get(app, shared_worker):
    result = app.tasks["celery_app.tasks.fail"].delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result_of(result, shared_worker)
    assert result.state == "FAILURE"


def test_celery_chain_feeds_each_result_to_the_next_task(app, shared_worker):
    # The worker sends mul itself, to the app's default queue, after add succeeded.
    result = example_tasks().add_then_multiply(app, 2, 3, 4).apply_async()
    assert result_of(result, shared_worker) == 20
    assert result.parent is not None
    assert result_of(result.parent, shared_worker) == 5


def test_celery_group_returns_every_result_in_order(app, shared_worker):
    result = group(app.tasks["celery_app.tasks.mul"].s(i, 3) for i in range(8)).apply_async()
    assert result.get(timeout=30) == [3 * i for i in range(8)]


def test_celery_retry_with_countdown_runs_the_task_again_until_it_succeeds(app, shared_worker):
    result = app.tasks["celery_app.tasks.flaky"].apply_async((2,), {"countdown": 0.2})
    assert result_of(result, shared_worker) == {"retries": 2, "hostname": shared_worker.hostname}
    # Each retry is a new message with an ETA, held by the worker until it is due.
    retries = [line for line in shared_worker.log().splitlines() if result.id in line]
    assert sum("Retry in 0.2s" in line for line in retries) == 2, retries


def test_celery_inspect_ping_command_gets_a_pong_from_the_worker(broker, shared_worker):
    env = {**os.environ, "AMQP_URL": broker.url, "CELERY_QUEUE": shared_worker.queue}
    command = [sys.executable, "-m", "celery", "-A", "celery_app.tasks", "inspect", "ping"]
    done = subprocess.run(
        [*command, f"--destination={shared_worker.hostname}", "--timeout=10"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{shared_worker.hostname}: OK" in done.stdout
    assert "pong" in done.stdout


def test_celery_control_ping_and_active_queues_answer(app, shared_worker):
    # Broadcast over the celery.pidbox fanout exchange; replies on reply.celery.pidbox.
    replies = app.control.ping(destination=[shared_worker.hostname], timeout=10)
    assert replies == [{shared_worker.hostname: {"ok": "pong"}}]
    active = app.control.inspect(destination=[shared_worker.hostname], timeout=10).active_queues()
    assert active is not None
    (queues,) = active.values()
    assert [(q["name"], q["queue_arguments"]) for q in queues] == [
        (shared_worker.queue, {"x-max-priority": example_tasks().MAX_PRIORITY})
    ]


def test_celery_events_report_a_task_received_started_and_succeeded(app, shared_worker):
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": events.put})
        # wakeup=True asks every worker for a heartbeat once the receiver consumes.
        capture = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": 60, "wakeup": True}
        )
        capture.start()
        try:

            def next_event(kind: str, **match: Any) -> dict[str, Any]:
                while True:
                    event = events.get(timeout=30)
                    if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                        return event

            next_event("worker-heartbeat", hostname=shared_worker.hostname)
            result = app.tasks["celery_app.tasks.add"].delay(20, 22)
            assert result_of(result, shared_worker) == 42
            received = next_event("task-received", uuid=result.id)
            assert received["name"] == "celery_app.tasks.add"
            next_event("task-started", uuid=result.id)
            assert next_event("task-succeeded", uuid=result.id)["result"] == "42"
        finally:
            receiver.should_stop = True
            capture.join(30)


def test_celery_acks_late_task_of_a_sigkilled_worker_runs_again_on_a_second_worker(
    broker, workers, tmp_path
):
    name = unique("celery-acks-late")
    first = start_worker(broker, workers, tmp_path, name)
    app = client_app(broker.url, name)
    try:
        upload = tmp_path / "upload.txt"
        result = app.tasks["celery_app.tasks.wait_for_file"].delay(str(upload))

        # task_track_started: the STARTED state (with the worker's pid) comes back over rpc://.
        def started() -> bool | None:
            return True if result.state == "STARTED" else None

        poll(started, "task started on the first worker")
        assert result.info["pid"] == first.pid
        first.kill()  # mid-task: the delivery was never acked
        upload.write_text("hello")
        second = start_worker(broker, workers, tmp_path, name)
        outcome = result_of(result, second)
        assert outcome["pid"] == second.pid
        assert outcome["size"] == 5
        assert outcome["redelivered"] is True
    finally:
        app.close()


def test_celery_higher_priority_tasks_overtake_lower_ones_in_a_backlog(broker, workers, tmp_path):
    name = unique("celery-priority")
    app = client_app(broker.url, name)
    try:
        job = app.tasks["celery_app.tasks.job"]
        # The backlog builds up before any worker runs: the client declares the priority queue.
        results = [job.apply_async((f"low-{i}",), priority=0) for i in range(4)]
        results += [job.apply_async((f"mid-{i}",), priority=4) for i in range(2)]
        results += [job.apply_async((f"high-{i}",), priority=9) for i in range(4)]
        worker = start_worker(broker, workers, tmp_path, name)
        done = sorted((result_of(r, worker) for r in results), key=lambda d: d["order"])
        assert [d["label"] for d in done] == [
            *(f"high-{i}" for i in range(4)),
            *(f"mid-{i}" for i in range(2)),
            *(f"low-{i}" for i in range(4)),
        ]
    finally:
        app.close()


def test_celery_beat_sends_the_periodic_task_to_the_worker(broker, workers, tmp_path, monkeypatch):
    # The worker runs beat too (-B); the example app schedules job("beat") when asked to.
    monkeypatch.setenv("CELERY_BEAT_SECONDS", "0.5")
    name = unique("celery-beat")
    worker = start_worker(
        broker, workers, tmp_path, name, "--beat", f"--schedule={tmp_path / 'sched'}"
    )

    def ran_twice() -> bool | None:
        runs = [line for line in worker.log().splitlines() if "'label': 'beat'" in line]
        return True if len(runs) >= 2 else None

    poll(ran_twice, "two runs of the periodic task")
