"""A small HTTP client for the management API tests (urllib, basic auth, JSON), and `amqplite ctl`."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import attrs
from broker_process import BrokerProcess

from amqplite.cli.main import main


@attrs.frozen
class Reply:
    """One HTTP response: status, headers (lower-cased names) and the decoded JSON body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        """The body as JSON (None when empty)."""
        return json.loads(self.raw) if self.raw else None


def q(name: str) -> str:
    """Percent-encode one path segment (the vhost "/" becomes %2F)."""
    return urllib.parse.quote(name, safe="")


def call(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: tuple[str, str] | None = ("guest", "guest"),
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """Make one request; 4xx/5xx come back as a Reply, not an exception."""
    data = (
        raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    )
    request = urllib.request.Request(base_url + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("authorization", f"Basic {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy and return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def ctl(broker: BrokerProcess, *args: str) -> str:
    """Run `amqplite ctl` in process against the broker's management API; its stdout."""
    out = io.StringIO()
    status = main(["ctl", "--url", broker.management_url, *args], out=out)
    assert status == 0, out.getvalue()
    return out.getvalue()
