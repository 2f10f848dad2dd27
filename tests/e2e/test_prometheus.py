"""The rabbitmq_prometheus-compatible endpoint, read with prometheus_client's own parser."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from broker_process import BrokerProcess, free_port, start_broker
from mgmt_helpers import call
from prometheus_client.parser import text_string_to_metric_families

# Every family the RabbitMQ-Overview Grafana dashboard of RabbitMQ 3.10.8 queries
# (rabbitmq_prometheus/docker/grafana/dashboards/RabbitMQ-Overview.json at v3.10.8).
DASHBOARD_FAMILIES = {
    "rabbitmq_build_info",
    "rabbitmq_identity_info",
    "rabbitmq_channel_consumers",
    "rabbitmq_channels",
    "rabbitmq_channels_closed",
    "rabbitmq_channels_opened",
    "rabbitmq_connections",
    "rabbitmq_connections_closed",
    "rabbitmq_connections_opened",
    "rabbitmq_consumers",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_global_messages_acknowledged",
    "rabbitmq_global_messages_confirmed",
    "rabbitmq_global_messages_delivered_consume_auto_ack",
    "rabbitmq_global_messages_delivered_consume_manual_ack",
    "rabbitmq_global_messages_delivered_get_auto_ack",
    "rabbitmq_global_messages_delivered_get_manual_ack",
    "rabbitmq_global_messages_get_empty",
    "rabbitmq_global_messages_received_confirm",
    "rabbitmq_global_messages_received",
    "rabbitmq_global_messages_redelivered",
    "rabbitmq_global_messages_routed",
    "rabbitmq_global_messages_unroutable_dropped",
    "rabbitmq_global_messages_unroutable_returned",
    "rabbitmq_process_max_fds",
    "rabbitmq_process_max_tcp_sockets",
    "rabbitmq_process_open_fds",
    "rabbitmq_process_open_tcp_sockets",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queues",
    "rabbitmq_queues_created",
    "rabbitmq_queues_declared",
    "rabbitmq_queues_deleted",
    "rabbitmq_resident_memory_limit_bytes",
}  # counters' family names as the parser gives them: without _total


PROMETHEUS_PORT = free_port()


@pytest.fixture(scope="module")
def metrics_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with its Prometheus endpoint on a port of its own (PROMETHEUS_PORT)."""
    data = tmp_path_factory.mktemp("prom") / "data"
    broker = start_broker(data, "--prometheus-port", str(PROMETHEUS_PORT))
    yield broker
    broker.stop()


def scrape(broker: BrokerProcess, path: str = "/metrics") -> dict[str, Any]:
    """GET the endpoint without credentials and parse it: family name -> Metric."""
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}{path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The value of the one sample of `name` with these labels."""
    family = families[name.removesuffix("_total")]
    found = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def test_aggregated_metrics_have_every_dashboard_family_with_live_values(
    metrics_broker: BrokerProcess, uid: str
) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(metrics_broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(uid)
        ch.confirm_delivery()
        for body in (b"a", b"b", b"c"):
            ch.basic_publish("", uid, body)
        ch.basic_publish("amq.direct", "nowhere", b"lost")
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=1)
        consumer.basic_consume(uid, lambda *_: None)  # holds one unacked
        conn.process_data_events(0.2)
        families = scrape(metrics_broker)
        assert families.keys() >= DASHBOARD_FAMILIES
        identity = families["rabbitmq_identity_info"].samples[0].labels
        assert {"rabbitmq_node", "rabbitmq_cluster"} <= identity.keys()
        assert value(families, "rabbitmq_queue_messages_ready") == 2
        assert value(families, "rabbitmq_queue_messages_unacked") == 1
        assert value(families, "rabbitmq_connections") == 1
        assert value(families, "rabbitmq_channels") == 2
        assert value(families, "rabbitmq_consumers") == 1
        assert value(families, "rabbitmq_channel_consumers") == 1
        amqp = {"protocol": "amqp091"}
        assert value(families, "rabbitmq_global_messages_received_total", **amqp) == 4
        assert value(families, "rabbitmq_global_messages_routed_total", **amqp) == 3
        assert value(families, "rabbitmq_global_messages_unroutable_dropped_total", **amqp) == 1
        assert value(families, "rabbitmq_global_messages_confirmed_total", **amqp) == 4
        classic = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}
        name = "rabbitmq_global_messages_delivered_consume_manual_ack_total"
        assert value(families, name, **classic) == 1
        assert value(families, "rabbitmq_queues_created_total") >= 1
        assert value(families, "rabbitmq_connections_opened_total") >= 1
        assert value(families, "rabbitmq_channels_opened_total") >= 2
        ch.queue_delete(uid)
    finally:
        conn.close()


def test_per_object_metrics_label_each_queue(metrics_broker: BrokerProcess, uid: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(metrics_broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare(uid)
        ch.basic_publish("", uid, b"x" * 7)
        families = scrape(metrics_broker, "/metrics/per-object")
        mine = {"vhost": "/", "queue": uid}
        assert value(families, "rabbitmq_queue_messages_ready", **mine) == 1
        assert value(families, "rabbitmq_queue_messages_ready_bytes", **mine) == 7
        assert value(families, "rabbitmq_queue_messages_published_total", **mine) == 1
        ch.queue_delete(uid)
    finally:
        conn.close()


def test_no_credentials_needed_and_management_metrics_unchanged(
    metrics_broker: BrokerProcess,
) -> None:
    port = PROMETHEUS_PORT
    assert call(f"http://127.0.0.1:{port}", "GET", "/api/overview", auth=None).status == 404
    assert call(f"http://127.0.0.1:{port}", "POST", "/metrics", auth=None).status == 405
    old = call(metrics_broker.management_url, "GET", "/metrics", auth=None)
    assert old.status == 401  # /metrics on the management port keeps its basic auth
    assert (
        "amqplite_queue_messages_ready"
        in call(metrics_broker.management_url, "GET", "/metrics").raw.decode()
    )


def test_a_chosen_prometheus_port_in_use_stops_the_start_with_one_line(
    tmp_path: Path, metrics_broker: BrokerProcess
) -> None:
    taken = str(PROMETHEUS_PORT)
    result = subprocess.run(
        [sys.executable, "-m", "amqplite", "serve", "--port", "0", "--management-port",
         str(free_port()), "--prometheus-port", taken, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"amqplite: cannot listen on 127.0.0.1:{taken} for Prometheus metrics (--prometheus-port"
        )
    )
