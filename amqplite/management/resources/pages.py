"""The dashboard page at / and Prometheus /metrics."""

from __future__ import annotations

from importlib import resources as importlib_resources

from amqplite.management.app import Call
from amqplite.management.http import Response
from amqplite.management.metrics import CONTENT_TYPE, render_metrics
from amqplite.management.resources.overview import memory_used
from amqplite.management.routing import MANAGEMENT, PUBLIC, Router


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/", dashboard, PUBLIC)
    router.add("GET", "/metrics", metrics, MANAGEMENT)


def dashboard_html() -> bytes:
    """The dashboard page (plain HTML and JavaScript; it reads the JSON API)."""
    return (importlib_resources.files("amqplite.management") / "dashboard.html").read_bytes()


def dashboard(call: Call) -> Response:
    """The dashboard; it asks for credentials itself and calls the API with them."""
    return Response(200, dashboard_html(), "text/html; charset=utf-8")


def metrics(call: Call) -> Response:
    """Prometheus text exposition."""
    app = call.app
    text = render_metrics(app.node, app.queue_metrics, app.store, memory_used())
    return Response(200, text.encode(), CONTENT_TYPE)
