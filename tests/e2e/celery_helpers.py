"""Celery worker subprocesses and client apps for the Celery end-to-end tests; example loading."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import celery
import celery.exceptions
import celery.result

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
T = TypeVar("T")


def load_example(relative: str) -> ModuleType:
    """Import an example file as a module of its own (examples/ is not a package)."""
    name = "example_" + re.sub(r"\W", "_", relative.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def example_tasks() -> ModuleType:
    """examples/celery_app/tasks.py, imported as a module of its own."""
    return load_example("celery_app/tasks.py")


def client_app(url: str, queue: str) -> celery.Celery:
    """The example app as a client whose tasks go to `queue`."""
    app: celery.Celery = example_tasks().create_app(url, queue)
    return app


def poll(check: Callable[[], T | None], what: str, within: float = 30.0) -> T:
    """Call check() until it returns something other than None; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.05)


class CeleryWorker:
    """A `celery worker` subprocess (solo pool) of the example app, consuming one queue."""

    def __init__(self, url: str, queue: str, hostname: str, log_path: Path, *extra: str) -> None:
        self.queue = queue
        self.hostname = hostname
        self.log_path = log_path
        env = {**os.environ, "AMQP_URL": url, "CELERY_QUEUE": queue}
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app.tasks",
            "worker",
            "--pool=solo",
            "--loglevel=info",
            f"--hostname={hostname}",
            "--without-gossip",
            "--without-mingle",
            *extra,
            # AMQP heartbeats put a timer in the worker's event loop, which bounds its poll
            # timeout; without one kombu's hub may sit on a frame it has already scheduled to
            # read for up to 10s (celery/celery#3978): slow, not wrong.
            "--",
            "broker.heartbeat=2",
        ]
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                command, cwd=EXAMPLES, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        """The worker's process id (the solo pool runs tasks in this process)."""
        return self.proc.pid

    def log(self) -> str:
        """The worker's log so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, within: float = 30.0) -> None:
        """Block until the worker logs that it is consuming; fail with its log if it exits."""

        def ready() -> bool | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            return True if f"{self.hostname} ready." in self.log() else None

        poll(ready, f"worker {self.hostname} ready", within)

    def kill(self) -> None:
        """SIGKILL the worker: no clean AMQP close, unacked tasks go back to the queue."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, app: celery.Celery) -> None:
        """Shut the worker down by remote control (acted on at once), or kill it."""
        if self.proc.poll() is not None:
            return
        try:
            app.control.shutdown(destination=[self.hostname])
            self.proc.wait(timeout=15)
        except Exception:
            self.kill()


def result_of(result: celery.result.AsyncResult, worker: CeleryWorker, within: float = 30) -> Any:
    """result.get(), failing with the worker's log if no result comes back in time."""
    try:
        return result.get(timeout=within)
    except celery.exceptions.TimeoutError:
        tail = "\n".join(worker.log().splitlines()[-40:])
        raise AssertionError(f"no result within {within}s; worker log:\n{tail}") from None
