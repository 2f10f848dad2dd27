"""The management endpoint on trio: HTTP listeners, the visibility-timeout timer, rate samples."""

from __future__ import annotations

import logging
import math
import time
from functools import partial

import trio

from amqplite.config.models import ManagementConfig
from amqplite.management.app import ManagementApp
from amqplite.management.http import HttpLimits, WaitDurable, serve_http
from amqplite.management.resources import build_app
from amqplite.management.views import NodeView

log = logging.getLogger("amqplite.management")

SAMPLE_INTERVAL = 5.0  # seconds between rate samples of every queue (RabbitMQ's default)


async def run_management(
    node: NodeView,
    config: ManagementConfig,
    *,
    store: object | None = None,
    wait_durable: WaitDurable | None = None,
    limits: HttpLimits | None = None,
    task_status: trio.TaskStatus[ManagementApp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the management API on config.host:config.port until cancelled."""
    app = build_app(node, clock=trio.current_time, wall_clock=time.time, store=store)
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_http, wait_durable=wait_durable),
            app.handle,
            listeners,
            limits or HttpLimits(),
        )
        nursery.start_soon(_sqs_timer, app)
        nursery.start_soon(_sampler, app)
        log.info("management listening on http://%s:%s/", config.host, port)
        task_status.started(app)


async def _sqs_timer(app: ManagementApp) -> None:
    """Requeue received messages whose visibility timed out; publish delayed ones when due."""
    sqs = app.sqs
    while True:
        changed = trio.Event()
        sqs.on_change = changed.set
        deadline = sqs.next_deadline()
        with trio.move_on_at(deadline if deadline is not None else math.inf):
            await changed.wait()
        try:
            sqs.expire(trio.current_time())
        except Exception:  # never take the node down for the HTTP messaging timer
            log.exception("visibility timer failed")


async def _sampler(app: ManagementApp) -> None:
    """Sample every queue's counters periodically, so rates exist without anyone polling."""
    while True:
        await trio.sleep(SAMPLE_INTERVAL)
        try:
            app.sample()
        except Exception:
            log.exception("rate sampling failed")
