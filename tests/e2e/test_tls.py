"""AMQP over TLS: pika with a CA made by trustme, SASL EXTERNAL from the client certificate's CN."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.credentials
import pika.exceptions
import pytest
from broker_process import BrokerProcess, free_port, run_serve, start_broker
from mgmt_helpers import call

trustme = pytest.importorskip("trustme")

DEFINITIONS = """
users:
  - {name: tls-client, password: unused-secret, tags: []}
permissions:
  - {user: tls-client, vhost: /}
"""


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, ca: Any
) -> Iterator[tuple[BrokerProcess, int]]:
    """A broker with a TLS listener that asks clients for certificates (optional ones)."""
    tmp = tmp_path_factory.mktemp("tls")
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    (tmp / "defs.yaml").write_text(DEFINITIONS)
    tls_port = free_port()
    (tmp / "amqplite.yaml").write_text(
        f"""
tls:
  enabled: true
  port: {tls_port}
  certfile: {tmp / "server.pem"}
  cafile: {tmp / "ca.pem"}
  verify_peer: true
"""
    )
    proc = start_broker(
        tmp / "data",
        "--config",
        str(tmp / "amqplite.yaml"),
        "--definitions",
        str(tmp / "defs.yaml"),
    )
    yield proc, tls_port
    proc.stop()


def _client_context(ca: Any, client_cn: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cn is not None:
        ca.issue_cert(client_cn, common_name=client_cn).configure_cert(context)
    return context


def _params(port: int, context: ssl.SSLContext, **kwargs: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        port,
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1,
        **kwargs,
    )


def test_pika_over_tls_round_trip(tls_broker: tuple[BrokerProcess, int], ca: Any) -> None:
    _, port = tls_broker
    with pika.BlockingConnection(_params(port, _client_context(ca, None))) as conn:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        ch.basic_publish("", queue, b"x" * 300_000)  # several TLS records
        _, _, body = ch.basic_get(queue, auto_ack=True)
        assert body == b"x" * 300_000


def test_external_login_as_the_certificate_cn(
    tls_broker: tuple[BrokerProcess, int], ca: Any
) -> None:
    proc, port = tls_broker
    context = _client_context(ca, "tls-client")
    external = pika.credentials.ExternalCredentials()
    with pika.BlockingConnection(_params(port, context, credentials=external)) as conn:
        conn.channel().queue_declare("", exclusive=True)
    assert "user=tls-client" in proc.output()


def test_external_for_an_unknown_cn_is_refused(
    tls_broker: tuple[BrokerProcess, int], ca: Any
) -> None:
    _, port = tls_broker
    context = _client_context(ca, "nobody-here")
    external = pika.credentials.ExternalCredentials()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(_params(port, context, credentials=external))


def test_external_without_a_client_certificate_is_not_offered(
    tls_broker: tuple[BrokerProcess, int], ca: Any
) -> None:
    _, port = tls_broker
    external = pika.credentials.ExternalCredentials()
    with pytest.raises(pika.exceptions.AMQPConnectionError):  # pika finds no mechanism in common
        pika.BlockingConnection(_params(port, _client_context(ca, None), credentials=external))


def test_plain_amqp_on_the_tls_port_gets_no_amqp(tls_broker: tuple[BrokerProcess, int]) -> None:
    _, port = tls_broker
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while chunk := sock.recv(4096):  # the server ends the connection: the TLS handshake failed
            data += chunk
        assert b"AMQP" not in data


def test_the_plain_listener_still_serves(tls_broker: tuple[BrokerProcess, int]) -> None:
    proc, _ = tls_broker
    with pika.BlockingConnection(pika.URLParameters(proc.url)) as conn:
        conn.channel()


def test_a_missing_certificate_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "amqplite.yaml").write_text(
        f"tls:\n  enabled: true\n  port: {free_port()}\n  certfile: {tmp_path / 'none.pem'}\n"
    )
    result = run_serve(
        *("--config", str(tmp_path / "amqplite.yaml")),
        *("--port", str(free_port()), "--management-port", "0", "--data-dir", str(tmp_path)),
    )
    assert result.returncode == 2, result.stderr
    assert "tls.certfile" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_management_api_shows_tls_connections(
    tls_broker: tuple[BrokerProcess, int], ca: Any
) -> None:
    proc, port = tls_broker
    with pika.BlockingConnection(_params(port, _client_context(ca, None))) as conn:
        conn.channel()
        rows = call(proc.management_url, "GET", "/api/connections").json
        (row,) = [r for r in rows if r["port"] == port]
        assert row["ssl"] is True
        assert row["ssl_protocol"].startswith("TLS")
        assert row["ssl_cipher"]
        assert row["recv_oct"] > 0  # the TCP counters under the TLS layer
