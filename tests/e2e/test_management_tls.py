"""The management API and the metrics over HTTPS (management.tls), with trustme certificates."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker_process import BrokerProcess, free_port, run_serve, start_broker

trustme = pytest.importorskip("trustme")

AUTH = ("guest", "guest")


class TlsBroker:
    """A broker with HTTPS on its own ports, and the files a client needs."""

    def __init__(self, proc: BrokerProcess, https: int, metrics: int, tmp: Path) -> None:
        self.proc = proc
        self.https = https
        self.metrics = metrics
        self.tmp = tmp


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, ca: Any) -> Iterator[TlsBroker]:
    """HTTPS that asks for a client certificate and refuses clients without one."""
    tmp = tmp_path_factory.mktemp("mgmt-tls")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    client = ca.issue_cert("admin-client", common_name="admin-client")
    client.cert_chain_pems[0].write_to_path(str(tmp / "client.crt"))
    client.private_key_pem.write_to_path(str(tmp / "client.key"))
    https, metrics = free_port(), free_port()
    (tmp / "amqplite.yaml").write_text(
        f"""
management:
  prometheus_port: 0
  prometheus_tls_port: {metrics}
  tls:
    enabled: true
    port: {https}
    certfile: {tmp / "server.pem"}
    cafile: {tmp / "ca.pem"}
    verify_peer: true
    fail_if_no_peer_cert: true
"""
    )
    proc = start_broker(tmp / "data", "--config", str(tmp / "amqplite.yaml"))
    yield TlsBroker(proc, https, metrics, tmp)
    proc.stop()


def _context(ca: Any, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if with_cert:
        ca.issue_cert("admin-client", common_name="admin-client").configure_cert(context)
    return context


def test_the_api_answers_over_https(broker: TlsBroker, ca: Any) -> None:
    url = f"https://127.0.0.1:{broker.https}"
    with httpx.Client(verify=_context(ca, True), auth=AUTH, timeout=30) as client:
        overview = client.get(f"{url}/api/overview")
        assert overview.status_code == 200
        assert overview.json()["product_name"]
        put = client.put(f"{url}/api/queues/%2F/over-https", json={"durable": False})
        assert put.status_code in (201, 204)
        queue = client.get(f"{url}/api/queues/%2F/over-https")
        assert queue.status_code == 200
        assert queue.json()["name"] == "over-https"


def test_a_client_without_a_certificate_is_refused(broker: TlsBroker, ca: Any) -> None:
    url = f"https://127.0.0.1:{broker.https}/api/overview"
    errors = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
    with (
        httpx.Client(verify=_context(ca, False), auth=AUTH, timeout=30) as c,
        pytest.raises(errors),
    ):
        c.get(url)


def test_plain_http_on_the_https_port_gets_no_api(broker: TlsBroker) -> None:
    url = f"http://127.0.0.1:{broker.https}/api/overview"
    errors = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)
    with httpx.Client(auth=AUTH, timeout=30) as client, pytest.raises(errors):
        client.get(url)


def test_the_plain_listener_still_serves(broker: TlsBroker) -> None:
    response = httpx.get(f"{broker.proc.management_url}/api/overview", auth=AUTH, timeout=30)
    assert response.status_code == 200


def test_metrics_over_https(broker: TlsBroker, ca: Any) -> None:
    url = f"https://127.0.0.1:{broker.metrics}/metrics"
    response = httpx.get(url, verify=_context(ca, True), timeout=30)
    assert response.status_code == 200
    assert "rabbitmq_" in response.text


def test_rabbitmqadmin_over_https(broker: TlsBroker) -> None:
    script = shutil.which("rabbitmqadmin") or str(Path(sys.executable).parent / "rabbitmqadmin")
    if not Path(script).is_file():
        pytest.skip("rabbitmqadmin not found: scripts/test-deps extracts it (Debian packages)")
    tmp = broker.tmp
    result = subprocess.run(
        [
            *(sys.executable, script, "--ssl", "-H", "localhost", "-P", str(broker.https)),
            *("--ssl-ca-cert-file", str(tmp / "ca.pem")),
            *(
                "--ssl-cert-file",
                str(tmp / "client.crt"),
                "--ssl-key-file",
                str(tmp / "client.key"),
            ),
            *("-u", "guest", "-p", "guest", "-f", "raw_json", "list", "vhosts"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"name":"/"' in result.stdout.replace(" ", "")


def test_a_missing_certificate_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "amqplite.yaml").write_text(
        f"management:\n  tls:\n    enabled: true\n    port: {free_port()}\n"
        f"    certfile: {tmp_path / 'none.pem'}\n"
    )
    result = run_serve(
        *("--config", str(tmp_path / "amqplite.yaml")),
        *("--port", str(free_port()), "--management-port", str(free_port())),
        *("--prometheus-port", "0", "--data-dir", str(tmp_path)),
    )
    assert result.returncode == 2, result.stderr
    assert "management.tls.certfile" in result.stderr
    assert "Traceback" not in result.stderr
