"""Run every program under examples/ end to end against the broker fixture."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import celery
import celery.exceptions
import celery.result
import pika
import pika.exceptions
import pytest
from celery_helpers import CeleryWorker, client_app, load_example, result_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


producer = load_example("work_queue/producer.py")
worker = load_example("work_queue/worker.py")
rpc_server = load_example("rpc/server.py")
rpc_client = load_example("rpc/client.py")
emit_log = load_example("topic_logs/emit_log.py")
receive_logs = load_example("topic_logs/receive_logs.py")


@pytest.fixture
def uid(uid: str) -> str:
    """The shared unique name, made safe for exchange names (no brackets from parametrize)."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", uid)


class Script:
    """An example run as a subprocess, its output lines collected by a reader thread."""

    def __init__(self, relative: str, *args: str, url: str) -> None:
        env = {**os.environ, "AMQP_URL": url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / relative), *args],
            cwd=EXAMPLES,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """Block until a line containing text is printed; fail with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout}s: {self.lines}") from None
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {text!r}: {self.lines}")
            self.lines.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = 15.0) -> list[str]:
        """Wait for the process to exit successfully and return all its output lines."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s: {self.lines}") from None
        while (line := self._new.get(timeout=5)) is not None:
            self.lines.append(line)
        assert returncode == 0, self.lines
        return self.lines

    def kill(self) -> None:
        """SIGKILL the process (no clean AMQP close) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def scripts() -> Iterator[list[Script]]:
    """Collects started scripts and kills any still running at the end of the test."""
    started: list[Script] = []
    yield started
    for script in started:
        script.kill()


def start(scripts: list[Script], relative: str, *args: str, url: str) -> Script:
    """Start an example script and register it for cleanup."""
    script = Script(relative, *args, url=url)
    scripts.append(script)
    return script


@pytest.fixture
def pika_channel(broker) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A pika channel for setup, inspection and cleanup."""
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
        yield connection.channel()


def delete_queue(url: str, name: str) -> None:
    """Delete a queue left behind by an example (durable queues outlive their users)."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        connection.channel().queue_delete(name)


def delete_exchange(url: str, name: str) -> None:
    """Delete an exchange left behind by an example."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        connection.channel().exchange_delete(name)


# --- work_queue ---------------------------------------------------------------------------


def test_work_queue_delivers_every_job_exactly_once_across_two_workers(broker, uid, scripts):
    try:
        args = ("--queue", uid, "--idle-timeout", "1.0", "--seconds-per-dot", "0.01")
        workers = [start(scripts, "work_queue/worker.py", *args, url=broker.url) for _ in range(2)]
        for w in workers:
            w.wait_for("Waiting for jobs")
        sent = start(
            scripts,
            "work_queue/producer.py",
            "--count",
            "20",
            "--dots",
            "1",
            "--queue",
            uid,
            url=broker.url,
        )
        assert sent.finish() == [f" [x] Sent 20 jobs to {uid}"]

        done_by_worker = []
        for w in workers:
            lines = w.finish()
            done_by_worker.append([line.split()[-1] for line in lines if "[x] Done" in line])
        every_job = [job for done in done_by_worker for job in done]
        assert sorted(every_job) == sorted(producer.make_jobs(20, dots=1))
        # Prefetch 1 with round-robin dispatch: both workers get a share.
        assert all(done for done in done_by_worker), done_by_worker
    finally:
        delete_queue(broker.url, uid)


def test_work_queue_jobs_are_persistent_messages_on_a_durable_queue(broker, uid, pika_channel):
    try:
        assert producer.publish_jobs(broker.url, ["job-a", "job-b"], uid) == 2
        method, properties, body = pika_channel.basic_get(uid, auto_ack=True)
        assert body == b"job-a"
        assert properties.delivery_mode == 2
        assert method.message_count == 1
        # Redeclaring the queue as transient is refused: it was declared durable.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            pika_channel.queue_declare(uid, durable=False)
        assert info.value.reply_code == 406
        assert "durable" in info.value.reply_text
    finally:
        delete_queue(broker.url, uid)


def test_work_queue_job_of_a_killed_worker_goes_to_another_worker(broker, uid, scripts):
    try:
        slow = start(
            scripts,
            "work_queue/worker.py",
            "--queue",
            uid,
            "--seconds-per-dot",
            "30",
            url=broker.url,
        )
        slow.wait_for("Waiting for jobs")
        producer.publish_jobs(broker.url, ["job-slow."], uid)
        slow.wait_for("Received job-slow.")
        slow.kill()  # dies mid-job, without acking

        spare = start(
            scripts,
            "work_queue/worker.py",
            "--queue",
            uid,
            "--max-jobs",
            "1",
            "--seconds-per-dot",
            "0",
            url=broker.url,
        )
        lines = spare.finish()
        assert " [x] Done job-slow." in lines
    finally:
        delete_queue(broker.url, uid)


def test_work_queue_worker_function_returns_the_jobs_it_did(broker, uid):
    try:
        jobs = producer.make_jobs(5)
        producer.publish_jobs(broker.url, jobs, uid)
        seen: list[str] = []
        done = worker.run_worker(broker.url, uid, max_jobs=5, on_job=seen.append)
        assert done == jobs
        assert seen == jobs
        # Everything was acked: nothing is left for the next worker.
        assert worker.run_worker(broker.url, uid, idle_timeout=0.3) == []
    finally:
        delete_queue(broker.url, uid)


# --- rpc -----------------------------------------------------------------------------------

FIBS = {0: 0, 1: 1, 2: 1, 10: 55, 20: 6765, 30: 832040, 90: 2880067194370816120}


def test_rpc_client_gets_the_right_answer_for_each_concurrent_request(broker, uid):
    async def main() -> list[int]:
        ready = asyncio.Event()
        server = asyncio.create_task(
            rpc_server.serve(broker.url, uid, max_requests=len(FIBS), on_ready=ready.set)
        )
        await asyncio.wait_for(ready.wait(), 10)
        answers = await rpc_client.request_many(broker.url, list(FIBS), uid, reply_timeout=10)
        assert await asyncio.wait_for(server, 10) == len(FIBS)
        return answers

    try:
        answers = asyncio.run(main())
        assert answers == list(FIBS.values())
    finally:
        delete_queue(broker.url, uid)


def test_rpc_client_reply_arrives_on_a_server_named_exclusive_callback_queue(broker, uid):
    async def main() -> tuple[str, int]:
        ready = asyncio.Event()
        server = asyncio.create_task(
            rpc_server.serve(broker.url, uid, max_requests=1, on_ready=ready.set)
        )
        await asyncio.wait_for(ready.wait(), 10)
        async with rpc_client.FibonacciRpcClient(broker.url, uid) as client:
            answer = await client.call(15, reply_timeout=10)
            assert client.pending == {}
            name = client.callback_queue.name
        await asyncio.wait_for(server, 10)
        return name, answer

    try:
        name, answer = asyncio.run(main())
        assert answer == 610
        assert name.startswith("amq.gen-")
        # Exclusive: it went away with the client's connection.
        with (
            pika.BlockingConnection(pika.URLParameters(broker.url)) as connection,
            pytest.raises(pika.exceptions.ChannelClosedByBroker) as info,
        ):
            connection.channel().queue_declare(name, passive=True)
        assert info.value.reply_code == 404
    finally:
        delete_queue(broker.url, uid)


def test_rpc_scripts_round_trip(broker, uid, scripts):
    try:
        server = start(
            scripts, "rpc/server.py", "--queue", uid, "--max-requests", "3", url=broker.url
        )
        server.wait_for("Awaiting RPC requests")
        client = start(scripts, "rpc/client.py", "--queue", uid, "10", "20", "30", url=broker.url)
        assert client.finish() == [
            " [.] fib(10) = 55",
            " [.] fib(20) = 6765",
            " [.] fib(30) = 832040",
        ]
        assert server.finish()[-1] == " [*] Served 3 requests"
    finally:
        delete_queue(broker.url, uid)


# --- topic_logs ------------------------------------------------------------------------------

TOPIC_KEYS = [
    "kern.critical",
    "kern.info",
    "cron.critical",
    "app.db.error",
    "app.error",
    "kern.disk.critical",
    "auth.warning",
]
BINDINGS = {
    "kern": ["kern.*"],
    "critical": ["*.critical"],
    "kern_or_critical": ["kern.*", "*.critical"],
    "app_errors": ["app.#.error"],
    "all": ["#"],
    "none": ["nothing.matches.this"],
}
EXPECTED = {
    "kern": {"kern.critical", "kern.info"},
    "critical": {"kern.critical", "cron.critical"},
    "kern_or_critical": {"kern.critical", "kern.info", "cron.critical"},
    "app_errors": {"app.db.error", "app.error"},
    "all": set(TOPIC_KEYS),
    "none": set(),
}


def test_topic_receivers_get_exactly_the_logs_matching_their_binding_keys(broker, uid):
    results: dict[str, list[tuple[str, str]]] = {}
    errors: list[BaseException] = []
    ready = {name: threading.Event() for name in BINDINGS}

    def run(name: str) -> None:
        try:
            results[name] = receive_logs.receive(
                broker.url, BINDINGS[name], uid, idle_timeout=0.7, on_ready=ready[name].set
            )
        except BaseException as exc:
            errors.append(exc)
            ready[name].set()

    threads = [threading.Thread(target=run, args=(name,)) for name in BINDINGS]
    try:
        for thread in threads:
            thread.start()
        for event in ready.values():
            assert event.wait(10)
        assert errors == []
        emit_log.emit(broker.url, [(key, f"log {key}") for key in TOPIC_KEYS], uid)
        for thread in threads:
            thread.join(15)
        assert errors == []
        got = {name: [key for key, _ in logs] for name, logs in results.items()}
        # Each matching log arrives once, in publish order.
        assert got == {
            name: [key for key in TOPIC_KEYS if key in expected]
            for name, expected in EXPECTED.items()
        }
        assert all(message == f"log {key}" for logs in results.values() for key, message in logs)
    finally:
        delete_exchange(broker.url, uid)


def test_topic_scripts_emit_and_receive_by_pattern(broker, uid, scripts):
    try:
        receiver = start(
            scripts,
            "topic_logs/receive_logs.py",
            "--exchange",
            uid,
            "--max-messages",
            "3",
            "*.orange.*",
            "lazy.#",
            url=broker.url,
        )
        receiver.wait_for("Waiting for logs")
        for key in ["quick.orange.rabbit", "quick.brown.fox", "lazy.brown.fox", "lazy.pink.rabbit"]:
            emitter = start(
                scripts, "topic_logs/emit_log.py", "--exchange", uid, key, "hello", url=broker.url
            )
            assert emitter.finish() == [f" [x] Sent {key}:hello"]
        lines = receiver.finish()
        assert [line for line in lines if "[x]" in line] == [
            " [x] quick.orange.rabbit:hello",
            " [x] lazy.brown.fox:hello",
            " [x] lazy.pink.rabbit:hello",
        ]
    finally:
        delete_exchange(broker.url, uid)


# --- celery_app ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def celery_worker(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """A Celery worker subprocess (solo pool) for this module, stopped by a remote shutdown."""
    name = f"celery-e2e-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    # --without-heartbeat: no worker heartbeat events (the helper sets broker.heartbeat=2)
    worker = CeleryWorker(
        broker.url, name, f"{name}@e2e", log_path, f"--queues={name}", "--without-heartbeat"
    )
    try:
        yield worker
    finally:
        # A remote-control shutdown is acted on at once; SIGTERM waits for the idle poll.
        app = client_app(broker.url, worker.queue)
        try:
            worker.stop(app)
        finally:
            app.close()
        delete_queue(broker.url, worker.queue)
        delete_exchange(broker.url, worker.queue)


@pytest.fixture
def celery_app(broker, celery_worker: CeleryWorker) -> Iterator[celery.Celery]:
    """The example Celery app, pointed at the broker under test and the worker's queue."""
    app = client_app(broker.url, celery_worker.queue)
    yield app
    app.close()


def test_celery_task_delay_get_returns_the_result_over_rpc_backend(celery_app, celery_worker):
    add = celery_app.tasks["celery_app.tasks.add"]
    result = add.delay(2, 3)
    assert result_of(result, celery_worker) == 5
    assert result.successful()
    assert result.state == "SUCCESS"


def test_celery_many_tasks_each_get_their_own_result(celery_app, celery_worker):
    add = celery_app.tasks["celery_app.tasks.add"]
    word_count = celery_app.tasks["celery_app.tasks.word_count"]
    results = [add.delay(i, i) for i in range(10)]
    counted = word_count.delay("to be or not to be")
    assert [result_of(r, celery_worker) for r in results] == [2 * i for i in range(10)]
    assert result_of(counted, celery_worker) == {"to": 2, "be": 2, "or": 1, "not": 1}


def test_celery_task_exception_is_raised_by_get(celery_app, celery_worker):
    fail = celery_app.tasks["celery_app.tasks.fail"]
    result = fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result_of(result, celery_worker)
    assert result.state == "FAILURE"


def test_celery_worker_answers_remote_control_ping(celery_app, celery_worker):
    # Broadcast over the celery.pidbox fanout exchange; replies come back on reply.celery.pidbox.
    result_of(celery_app.tasks["celery_app.tasks.add"].delay(0, 0), celery_worker)
    replies = celery_app.control.ping(destination=[celery_worker.hostname], timeout=5)
    assert replies == [{celery_worker.hostname: {"ok": "pong"}}]


# --- partitions ---------------------------------------------------------------------------


def test_partitions_pipeline_keeps_each_customer_s_order_with_a_member_killed(tmp_path, uid):
    """The demo: two groups over three hash partitions each, a billing member SIGKILLed."""
    from broker_process import start_broker

    config = EXAMPLES / "partitions" / "amqplite.yaml"
    broker = start_broker(tmp_path / "data", "--config", str(config))
    started: list[Script] = []
    try:
        demo = start(
            started, "partitions/pipeline.py", "--prefix", f"{uid}.", "demo", url=broker.url
        )
        lines = demo.finish(timeout=60)
        assert "published 600 order events for 30 customers" in lines
        for group in ("billing", "shipping"):
            verdict = next(line for line in lines if line.startswith(f"{group}: "))
            assert verdict.startswith(f"{group}: 600 events,")
            assert verdict.endswith("per-customer order kept")
        assert "billing-1: killed" in lines
        assert "billing-2 had ['p0', 'p1', 'p2']" in next(
            line for line in lines if line.startswith("billing: ")
        )  # the survivor took over the killed member's partitions
    finally:
        for script in started:
            script.kill()
        broker.stop()
