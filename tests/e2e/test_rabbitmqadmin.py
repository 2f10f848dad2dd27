"""RabbitMQ's own rabbitmqadmin (Debian's, put in .venv/bin by scripts/test-deps) against amqplite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess, start_broker
from mgmt_helpers import call, q


def _rabbitmqadmin() -> str | None:
    """$RABBITMQADMIN, the venv's copy (scripts/test-deps), or one on PATH."""
    candidates = [
        os.environ.get("RABBITMQADMIN", ""),
        str(Path(sys.executable).parent / "rabbitmqadmin"),
        shutil.which("rabbitmqadmin") or "",
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


Admin = Callable[..., str]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this module."""
    started = start_broker(tmp_path_factory.mktemp("rabbitmqadmin") / "data")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Admin:
    """Run rabbitmqadmin against the broker; its stdout (the test fails on a non-zero exit)."""
    script = _rabbitmqadmin()
    if script is None:
        pytest.skip(
            "rabbitmqadmin not found: scripts/test-deps extracts it (needs root and Debian packages)"
        )

    def run(*args: str) -> str:
        cmd = [sys.executable, script, "-H", broker.host, "-P", str(broker.management_port)]
        result = subprocess.run(
            [*cmd, "-u", "guest", "-p", "guest", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    return run


def listing(admin: Admin, kind: str) -> list[dict[str, Any]]:
    """`rabbitmqadmin -f raw_json list KIND` parsed."""
    items: list[dict[str, Any]] = json.loads(admin("-f", "raw_json", "list", kind))
    return items


def api_get(broker: BrokerProcess, path: str) -> Any:
    reply = call(broker.management_url, "GET", path)
    assert reply.status == 200, reply.raw
    return reply.json


def test_declare_publish_get_purge_delete(admin: Admin, broker: BrokerProcess, uid: str) -> None:
    queue, exchange = f"q-{uid}", f"x-{uid}"
    assert "queue declared" in admin("declare", "queue", f"name={queue}", "durable=false")
    assert "exchange declared" in admin("declare", "exchange", f"name={exchange}", "type=direct")
    admin("declare", "binding", f"source={exchange}", f"destination={queue}", "routing_key=k")
    declared = api_get(broker, f"/api/queues/{q('/')}/{q(queue)}")
    assert declared["durable"] is False
    assert api_get(broker, f"/api/exchanges/{q('/')}/{q(exchange)}")["durable"] is True
    for body in ("one", "two", "three"):
        published = admin("publish", f"exchange={exchange}", "routing_key=k", f"payload={body}")
        assert "Message published" in published
    assert [b["routing_key"] for b in listing(admin, "bindings") if b["source"] == exchange] == [
        "k"
    ]
    assert next(x for x in listing(admin, "queues") if x["name"] == queue)["messages"] == 3

    got = json.loads(admin("-f", "raw_json", "get", f"queue={queue}", "count=2"))
    assert [m["payload"] for m in got] == ["one", "two"]  # count="2" as RabbitMQ reads it
    assert [m["redelivered"] for m in got] == [False, False]
    taken = admin("-f", "raw_json", "get", f"queue={queue}", "ackmode=ack_requeue_false")
    assert [m["payload"] for m in json.loads(taken)] == ["one"]
    assert "queue purged" in admin("purge", "queue", f"name={queue}")
    assert api_get(broker, f"/api/queues/{q('/')}/{q(queue)}")["messages"] == 0

    admin("delete", "binding", f"source={exchange}", "destination_type=queue",
          f"destination={queue}", "properties_key=k")  # fmt: skip
    assert not [b for b in listing(admin, "bindings") if b["source"] == exchange]
    assert "queue deleted" in admin("delete", "queue", f"name={queue}")
    assert "exchange deleted" in admin("delete", "exchange", f"name={exchange}")
    assert queue not in {x["name"] for x in listing(admin, "queues")}
    assert exchange not in {x["name"] for x in listing(admin, "exchanges")}


def test_declare_users_vhosts_permissions_and_policies(admin: Admin, uid: str) -> None:
    user, vhost = f"u-{uid}", f"v-{uid}"
    admin("declare", "vhost", f"name={vhost}")
    admin("declare", "user", f"name={user}", "password=secret", "tags=monitoring")
    admin("declare", "permission", f"vhost={vhost}", f"user={user}",
          "configure=^x$", "write=.*", "read=.*")  # fmt: skip
    admin("declare", "policy", f"--vhost={vhost}", f"name=p-{uid}", "pattern=^q",
          'definition={"max-length": 10}', "priority=7")  # fmt: skip
    assert next(u for u in listing(admin, "users") if u["name"] == user)["tags"] in (
        ["monitoring"],
        "monitoring",
    )
    permission = next(p for p in listing(admin, "permissions") if p["user"] == user)
    assert (permission["vhost"], permission["configure"]) == (vhost, "^x$")
    policy = next(p for p in listing(admin, "policies") if p["name"] == f"p-{uid}")
    assert (policy["priority"], policy["definition"]) == (7, {"max-length": 10})
    admin("delete", "user", f"name={user}")
    admin("delete", "vhost", f"name={vhost}")
    assert vhost not in {v["name"] for v in listing(admin, "vhosts")}


def test_list_connections_channels_consumers_nodes_and_overview(admin: Admin) -> None:
    for kind in ("connections", "channels", "consumers", "exchanges", "vhosts", "nodes"):
        assert isinstance(listing(admin, kind), list)
    exchanges = listing(admin, "exchanges")
    assert "amq.topic" in {x["name"] for x in exchanges}
    overview = json.loads(admin("-f", "raw_json", "show", "overview"))
    assert overview[0]["object_totals"]["exchanges"] == len(exchanges)


def test_export_then_import_brings_definitions_back(
    admin: Admin, broker: BrokerProcess, tmp_path: Path, uid: str
) -> None:
    queue = f"kept-{uid}"
    admin("declare", "queue", f"name={queue}", "durable=true", 'arguments={"x-max-length": 5}')
    exported = tmp_path / "defs.json"
    assert "Exported definitions" in admin("export", str(exported))
    document = json.loads(exported.read_text())
    assert any(x["name"] == queue for x in document["queues"])
    admin("delete", "queue", f"name={queue}")
    assert "Uploaded definitions" in admin("import", str(exported))
    restored = api_get(broker, f"/api/queues/{q('/')}/{q(queue)}")
    assert restored["durable"] is True
    assert restored["arguments"] == {"x-max-length": 5}
    admin("delete", "queue", f"name={queue}")
