"""The management endpoint on trio: HTTP listeners, the visibility-timeout timer, rate samples."""

from __future__ import annotations

import logging
import math
import ssl
import time
from functools import partial

import trio

from amqplite.config.models import ManagementConfig
from amqplite.config.source import ListenError
from amqplite.management.app import ManagementApp
from amqplite.management.http import HttpLimits, WaitDurable, serve_http
from amqplite.management.prometheus import PrometheusEndpoint
from amqplite.management.resources import build_app
from amqplite.management.views import NodeView

log = logging.getLogger("amqplite.management")

DEFAULT_PROMETHEUS_PORT = 15692  # rabbitmq_prometheus's
SAMPLE_INTERVAL = 5.0  # seconds between rate samples of every queue (RabbitMQ's default)


async def run_management(
    node: NodeView,
    config: ManagementConfig,
    *,
    store: object | None = None,
    wait_durable: WaitDurable | None = None,
    limits: HttpLimits | None = None,
    tls_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[ManagementApp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the management API on config.host:config.port until cancelled.

    With tls_context (built from management.tls by the caller), also over HTTPS on
    management.tls.port, and the metrics on management.prometheus_tls_port when set.
    """
    app = build_app(node, clock=trio.current_time, wall_clock=time.time, store=store)
    try:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        setting = "--management-port, AMQPLITE_MANAGEMENT_PORT or management.port"
        reason = exc.strerror or str(exc)
        raise ListenError("the management API", config.host, config.port, setting, reason) from None
    port = listeners[0].socket.getsockname()[1]
    prometheus = await _prometheus_listeners(config)
    https, prometheus_https = await _tls_listeners(config, tls_context)
    limits = limits or HttpLimits()
    serve_api = partial(serve_http, wait_durable=wait_durable)
    async with trio.open_nursery() as nursery:
        for api_listeners in (listeners, https):  # HTTP, then HTTPS if configured
            if api_listeners:
                await nursery.start(serve_api, app.handle, api_listeners, limits)
        if prometheus_https:
            endpoint = PrometheusEndpoint(app)
            await nursery.start(serve_http, endpoint.handle, prometheus_https, limits)
        if prometheus:
            endpoint = PrometheusEndpoint(app)
            await nursery.start(serve_http, endpoint.handle, prometheus, limits)
            where = prometheus[0].socket.getsockname()
            app.prometheus_port = int(where[1])
            log.info("rabbitmq_* metrics on http://%s:%s/metrics", where[0], where[1])
        nursery.start_soon(_sqs_timer, app)
        nursery.start_soon(_sampler, app)
        log.info("management listening on http://%s:%s/", config.host, port)
        task_status.started(app)


async def _prometheus_listeners(config: ManagementConfig) -> list[trio.SocketListener]:
    """The Prometheus port's listeners: a chosen port must open, the default may be taken."""
    if config.prometheus_port == 0:
        return []
    port = DEFAULT_PROMETHEUS_PORT if config.prometheus_port is None else config.prometheus_port
    try:
        return await trio.open_tcp_listeners(port, host=config.host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if config.prometheus_port is not None:
            setting = "--prometheus-port, AMQPLITE_PROMETHEUS_PORT or management.prometheus_port"
            raise ListenError("Prometheus metrics", config.host, port, setting, reason) from None
        log.warning(
            "no rabbitmq_* metrics endpoint: cannot listen on %s:%s (%s); "
            "choose a port with --prometheus-port",
            config.host,
            port,
            reason,
        )
        return []


TlsListeners = list[trio.SSLListener[trio.SocketStream]]


async def _tls_listeners(
    config: ManagementConfig, context: ssl.SSLContext | None
) -> tuple[TlsListeners, TlsListeners]:
    """HTTPS listeners for the API and the metrics (management.tls), none without a context."""
    tls = config.tls
    if context is None:
        return [], []
    ports = [("the management API over TLS", tls.port, "management.tls.port", "/")]
    if config.prometheus_tls_port:
        ports.append(
            (
                "Prometheus metrics over TLS",
                config.prometheus_tls_port,
                "management.prometheus_tls_port",
                "/metrics",
            )
        )
    opened: list[TlsListeners] = []
    for what, port, setting, path in ports:
        try:
            tcp = await trio.open_tcp_listeners(port, host=tls.host)
        except OSError as exc:
            raise ListenError(what, tls.host, port, setting, exc.strerror or str(exc)) from None
        where = tcp[0].socket.getsockname()
        log.info("%s on https://%s:%s%s", what, where[0], where[1], path)
        opened.append([trio.SSLListener(t, context, https_compatible=True) for t in tcp])
    return opened[0], opened[1] if len(opened) > 1 else []


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
