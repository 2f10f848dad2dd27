"""The dashboard page in headless Chromium: a queue created by the test shows up with its depth."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import tempfile
import urllib.parse
from typing import Any

import pytest
from mgmt_helpers import call, q

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary (scripts/test-deps installs Debian's); skipped, saying why, if none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH: scripts/test-deps installs it (needs root and apt-get)")
    return path


class _Rows(html.parser.HTMLParser):
    """Collects the dashboard's queue rows: data-queue -> {cell class: text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._row: str | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("data-queue"):
            self._row = attributes["data-queue"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            self._cell = attributes.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self.rows[self._row][self._cell] = self.rows[self._row].get(self._cell, "") + data


def dump_dom(chromium: str, url: str) -> str:
    """The page's DOM after its scripts ran (virtual time lets the fetches complete)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def test_dashboard_shows_a_new_queue_with_its_depth(broker: Any, uid: str, chromium: str) -> None:
    if not broker.is_amqplite:
        pytest.skip("the dashboard is amqplite's own")
    base = broker.management_url
    assert call(base, "PUT", f"/api/queues/{q('/')}/{q(uid)}", {"durable": False}).status == 201
    try:
        for i in range(3):
            body = {
                "routing_key": uid,
                "payload": f"m{i}",
                "payload_encoding": "string",
                "properties": {},
            }
            assert call(
                base, "POST", f"/api/exchanges/{q('/')}/amq.default/publish", body
            ).json == {"routed": True}
        fragment = urllib.parse.urlencode({"user": "guest", "password": "guest", "filter": uid})
        dom = dump_dom(chromium, f"{base}/#{fragment}")
        parser = _Rows()
        parser.feed(dom)
        assert f"//{uid}" in parser.rows, dom[-3000:]
        row = parser.rows[f"//{uid}"]  # data-queue is vhost + "/" + name
        assert row["name"] == uid
        assert row["messages-ready"] == "3"
        assert row["messages"] == "3"
        assert row["messages-unacked"] == "0"
        assert row["consumers"] == "0"
        assert 'data-loaded="true"' in dom
    finally:
        call(base, "DELETE", f"/api/queues/{q('/')}/{q(uid)}")


def test_dashboard_without_credentials_shows_the_login_form(broker: Any, chromium: str) -> None:
    if not broker.is_amqplite:
        pytest.skip("the dashboard is amqplite's own")
    dom = dump_dom(chromium, f"{broker.management_url}/")
    assert '<form id="login">' in dom
    assert '<main id="app" hidden="">' in dom
