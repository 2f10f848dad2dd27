"""The operator's path end to end: a broker booted with examples/definitions/orders.yaml, its
retry loop, permissions over AMQP, `amqplite ctl`, definitions export/import, and the log."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, start_broker
from mgmt_helpers import ctl
from pika_helpers import connect, connection

from amqplite.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "definitions" / "orders.yaml"
SERVICE = {"user": "orders-service", "password": "change-me"}


@pytest.fixture(scope="module")
def ops_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this module: orders.yaml applied at boot, and a second vhost `staging`."""
    base = tmp_path_factory.mktemp("ops")
    config = base / "amqplite.yaml"
    config.write_text(f'vhosts: ["/", staging]\ndefinitions: "{ORDERS}"\n')
    broker = start_broker(base / "data", "--config", str(config))
    yield broker
    broker.stop()


def service(broker: BrokerProcess, **overrides: Any) -> pika.BlockingConnection:
    """A connection as the orders-service user of orders.yaml."""
    params = pika.URLParameters(
        f"amqp://orders-service:change-me@{broker.host}:{broker.port}/%2F"
        "?heartbeat=0&blocked_connection_timeout=10"
    )
    for key, value in overrides.items():
        setattr(params, key, value)
    return pika.BlockingConnection(params)


def management_available(broker: BrokerProcess) -> bool:
    try:
        with urllib.request.urlopen(broker.management_url + "/api/overview", timeout=5):
            return True
    except OSError as exc:
        return "401" in str(exc)


@pytest.fixture
def api(ops_broker: BrokerProcess) -> BrokerProcess:
    """The module broker, for tests that need the management API (skipped without it)."""
    if not management_available(ops_broker):
        pytest.skip("the management API is not available on this broker")
    return ops_broker


def wait_get(ch: Any, queue: str, timeout: float = 15.0) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            return method, props, body
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue}")


# -- the example's routing and retry loop ---------------------------------------------------


def test_orders_events_reach_the_services_that_subscribed(ops_broker: BrokerProcess) -> None:
    with contextlib.closing(service(ops_broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("orders", "order.cancelled.us", b"cancel-1")
        method, _, body = wait_get(ch, "shipping.orders")
        ch.basic_ack(method.delivery_tag)
        assert body == b"cancel-1"
        assert ch.basic_get("billing.orders")[0] is None
        analytics = wait_get(ch, "analytics.orders")
        assert analytics[2] == b"cancel-1"


def test_rejected_order_comes_back_after_the_retry_delay_with_x_death(
    ops_broker: BrokerProcess,
) -> None:
    with contextlib.closing(service(ops_broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(
            "orders",
            "order.created.eu",
            b"order-42",
            pika.BasicProperties(delivery_mode=2, message_id="order-42"),
        )
        method, _, body = wait_get(ch, "billing.orders")
        assert body == b"order-42"
        assert not method.redelivered
        ch.basic_reject(method.delivery_tag, requeue=False)  # billing failed: retry later
        method, props, body = wait_get(ch, "billing.orders")
        ch.basic_ack(method.delivery_tag)
        assert body == b"order-42"
        deaths = props.headers["x-death"]
        assert [(d["queue"], d["reason"]) for d in deaths] == [
            ("billing.orders.retry", "expired"),
            ("billing.orders", "rejected"),
        ]
        assert all(d["count"] == 1 for d in deaths)


# -- permissions ------------------------------------------------------------------------------


def test_service_user_may_publish_and_consume_what_it_was_granted(
    ops_broker: BrokerProcess,
) -> None:
    with contextlib.closing(service(ops_broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("orders", "order.paid.eu", b"paid")
        assert wait_get(ch, "billing.orders")[2] == b"paid"
        ch.basic_publish("", "orders.parked", b"parked")  # write on amq.default


@pytest.mark.parametrize(
    ("operation", "refused"),
    [
        (lambda ch: ch.queue_declare("service-own-queue"), "queue 'service-own-queue'"),
        (lambda ch: ch.exchange_declare("service-ex", "fanout"), "exchange 'service-ex'"),
        (lambda ch: ch.queue_delete("billing.orders"), "queue 'billing.orders'"),
        (lambda ch: ch.basic_get("orders.parked"), "queue 'orders.parked'"),
        (lambda ch: ch.queue_purge("billing.orders.retry"), "queue 'billing.orders.retry'"),
        (lambda ch: ch.basic_publish("amq.topic", "x", b"no"), "exchange 'amq.topic'"),
        (
            lambda ch: ch.queue_bind("billing.orders", "amq.direct", "k"),
            "queue 'billing.orders'",
        ),
    ],
)
def test_service_user_is_refused_403_outside_its_permissions(
    ops_broker: BrokerProcess, operation: Any, refused: str
) -> None:
    with contextlib.closing(service(ops_broker)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            operation(ch)
        assert info.value.reply_code == 403
        assert info.value.reply_text == (
            f"ACCESS_REFUSED - access to {refused} in vhost '/' refused for user 'orders-service'"
        )
        assert conn.is_open  # a channel error only


def test_opening_a_vhost_without_permissions_is_refused_530(ops_broker: BrokerProcess) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        service(ops_broker, virtual_host="staging")
    assert (
        "(530) \"NOT_ALLOWED - access to vhost 'staging' refused for user 'orders-service'\""
        in (str(info.value))
    )
    guest = connect(ops_broker, virtual_host="staging")  # guest has every configured vhost
    guest.close()


# -- logging ----------------------------------------------------------------------------------


def test_log_has_open_and_close_lines_and_warnings_with_codes(ops_broker: BrokerProcess) -> None:
    with connection(ops_broker) as conn:
        local_port = conn._impl._transport._sock.getsockname()[1]  # the peer the broker sees
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:wrong@{ops_broker.host}:{ops_broker.port}/%2F")
        )
    with contextlib.suppress(pika.exceptions.ProbableAccessDeniedError):
        service(ops_broker, virtual_host="staging")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = ops_broker.output()
        if f"connection closed 127.0.0.1:{local_port} user=guest" in log and "530" in log:
            break
        time.sleep(0.05)
    assert f"INFO amqplite.session: connection open from 127.0.0.1:{local_port} user=guest" in log
    assert f"connection closed 127.0.0.1:{local_port} user=guest: closed by client" in log
    assert "WARNING amqplite.session: login refused from 127.0.0.1:" in log
    assert "user 'guest' (PLAIN)" in log
    assert "user=orders-service: 530 NOT_ALLOWED - access to vhost 'staging' refused" in log
    assert f"definitions {ORDERS}: 21 created, 1 unchanged, 0 conflicts" in log


# -- ctl --------------------------------------------------------------------------------------


def test_ctl_lists_queues_as_an_aligned_table(api: BrokerProcess) -> None:
    with connection(api) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", "orders.parked", f"p{i}".encode())
        text = ctl(api, "list", "queues")
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:5] == ["vhost", "name", "ready", "unacked", "consumers"]
    row = next(line for line in lines if " orders.parked " in line)
    cells = row.split()
    assert cells[1] == "orders.parked"
    assert int(cells[2]) >= 3
    widths = {len(line) for line in lines if line.strip()}
    assert len(lines) >= 7  # the six queues of orders.yaml and the header
    assert max(widths) - min(widths) < 10  # columns are padded, rows line up
    names = [line.split()[1] for line in lines[1:]]
    assert names == sorted(names)


def test_ctl_json_lists_exchanges_bindings_and_consumers(api: BrokerProcess) -> None:
    exchanges = json.loads(ctl(api, "--json", "list", "exchanges"))
    orders = next(e for e in exchanges if e["name"] == "orders")
    assert (orders["type"], orders["durable"]) == ("topic", True)
    bindings = json.loads(ctl(api, "--json", "list", "bindings"))
    assert {
        (b["source"], b["destination"], b["routing_key"])
        for b in bindings
        if b["source"] == "orders.requeue"
    } == {
        ("orders.requeue", "billing.orders", "billing"),
        ("orders.requeue", "shipping.orders", "shipping"),
    }
    with contextlib.closing(service(api)) as conn:
        ch = conn.channel()
        ch.basic_consume("shipping.orders", lambda *a: None, consumer_tag="ctl-test-consumer")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            consumers = json.loads(ctl(api, "--json", "list", "consumers"))
            if any(c["consumer_tag"] == "ctl-test-consumer" for c in consumers):
                break
            time.sleep(0.1)
        consumer = next(c for c in consumers if c["consumer_tag"] == "ctl-test-consumer")
        assert consumer["queue"]["name"] == "shipping.orders"
        table = ctl(api, "list", "consumers")
        assert "ctl-test-consumer" in table
        channels = ctl(api, "list", "channels")
        assert "orders-service" in channels


def test_ctl_purges_and_deletes_a_queue(api: BrokerProcess, uid: str) -> None:
    with connection(api) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(uid)
        ch.basic_publish("", uid, b"a")
        ch.basic_publish("", uid, b"b")
        assert "purged=" in ctl(api, "purge", uid)
        assert ch.queue_declare(uid, passive=True).method.message_count == 0
        assert json.loads(ctl(api, "--json", "delete-queue", uid)) == {
            "deleted": uid,
            "vhost": "/",
        }
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            conn.channel().queue_declare(uid, passive=True)
        assert info.value.reply_code == 404


def test_ctl_closes_a_connection_and_the_client_sees_320(api: BrokerProcess) -> None:
    conn = connect(api, client_properties={"connection_name": "close-me"})
    try:
        local_port = conn._impl._transport._sock.getsockname()[1]
        deadline = time.monotonic() + 10
        name = None
        while name is None and time.monotonic() < deadline:
            for c in json.loads(ctl(api, "--json", "list", "connections")):
                if c.get("peer_port") == local_port or f":{local_port} " in c["name"] + " ":
                    name = c["name"]
            time.sleep(0.05)
        assert name is not None
        ctl(api, "close-connection", name, "--reason", "maintenance")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            conn.sleep(10)  # the close arrives while pika waits
        assert info.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()


def test_ctl_command_runs_as_a_program(api: BrokerProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amqplite", "ctl", "--url", api.management_url, "list", "exchanges"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["vhost", "name", "type"]
    assert any(line.split()[1:3] == ["orders", "topic"] for line in result.stdout.splitlines()[1:])


def test_ctl_without_a_broker_says_so_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ctl", "--url", "http://127.0.0.1:9", "list", "queues"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the management API at http://127.0.0.1:9" in err
    assert "Traceback" not in err


# -- definitions export / import ------------------------------------------------------------


def _without_hashes(document: dict[str, Any]) -> dict[str, Any]:
    users = [{k: v for k, v in u.items() if k != "password_hash"} for u in document["users"]]
    return {**document, "users": users}


def test_export_wipe_import_export_gives_the_same_document(
    api: BrokerProcess, tmp_path: Path
) -> None:
    first = tmp_path / "first.json"
    assert main(["definitions", "export", "--url", api.management_url, "-o", str(first)]) == 0
    document = json.loads(first.read_text())
    assert {q["name"] for q in document["queues"]} >= {"billing.orders", "orders.parked"}
    wiped = start_broker(tmp_path / "wiped")
    try:
        out = io.StringIO()
        assert (
            main(["definitions", "import", "--url", wiped.management_url, str(first)], out=out) == 0
        )
        assert "imported (0 conflicts)" in out.getvalue()
        second = tmp_path / "second.json"
        assert (
            main(["definitions", "export", "--url", wiped.management_url, "-o", str(second)]) == 0
        )
        exported = json.loads(second.read_text())
        # a user that existed on both (guest, from the config) keeps its own random salt
        assert _without_hashes(exported) == _without_hashes(document)
        for user in exported["users"]:
            original = next(u for u in document["users"] if u["name"] == user["name"])
            assert user["password_hash"] == original["password_hash"] or user["name"] == "guest"
        with contextlib.closing(service(wiped)) as conn:  # the imported user logs in
            assert conn.is_open
    finally:
        wiped.stop()


def test_import_of_a_conflicting_file_reports_the_conflict(
    api: BrokerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text("exchanges:\n  - name: orders\n    type: fanout\n")
    assert main(["definitions", "import", "--url", api.management_url, str(changed)]) == 1
    err = capsys.readouterr().err
    assert "exchange 'orders' in vhost '/' exists with type 'topic'" in err
    exchanges = json.loads(ctl(api, "--json", "list", "exchanges"))
    assert next(e for e in exchanges if e["name"] == "orders")["type"] == "topic"
