"""The web UI in headless Chromium, driven as a user: log in, queues, messages, admin, charts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp_helpers import Browser, find_chromium
from mgmt_helpers import call, q

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium binary (scripts/test-deps installs Debian's); skipped, saying why, if none."""
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no chromium on PATH: scripts/test-deps installs it (needs root and Debian packages)"
        )
    return path


@pytest.fixture
def page(broker: Any, chromium: str) -> Iterator[Browser]:
    """A fresh browser on the UI's login page (the broker must be amqplite)."""
    if not broker.is_amqplite:
        pytest.skip("the web UI is amqplite's own")
    browser = Browser(chromium)
    try:
        browser.navigate(f"{broker.management_url}/")
        browser.wait_for(
            "document.getElementById('login') && !document.getElementById('login').hidden"
        )
        yield browser
    finally:
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where this test saves its screenshots (printed, so a failing run shows them)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    print(f"screenshots in {folder}")
    return folder


def log_in(
    page: Browser, user: str = "guest", password: str = "guest", refresh_ms: int = 0
) -> None:
    """Log in through the form; refresh_ms > 0 makes the UI poll faster than its 5 s."""
    if refresh_ms:
        page.evaluate(f"sessionStorage.setItem('amqplite.refresh', '{refresh_ms}')")
    page.fill("#login", {"user": user, "password": password})
    page.submit("#login")
    page.wait_for("!document.getElementById('app').hidden", "the app after logging in")


def go(page: Browser, fragment: str) -> None:
    """Open a page of the UI by its #fragment."""
    page.evaluate(f"location.hash = {json.dumps(fragment)}")


def publish(base: str, queue: str, payload: str) -> None:
    """Publish one message to a queue through the API's default exchange."""
    body = {
        "routing_key": queue,
        "payload": payload,
        "payload_encoding": "string",
        "properties": {},
    }
    assert call(base, "POST", f"/api/exchanges/{q('/')}/amq.default/publish", body).json == {
        "routed": True
    }


def test_wrong_password_is_refused_and_credentials_stay_out_of_urls(
    page: Browser, shots: Path
) -> None:
    page.fill("#login", {"user": "guest", "password": "not-the-password"})
    page.submit("#login")
    page.wait_for("document.getElementById('login-error').textContent", "the login error")
    assert "Wrong user name or password" in page.text("#login-error")
    assert page.evaluate("document.getElementById('app').hidden") is True
    log_in(page)
    assert "guest" in page.text("#who")
    assert "guest" not in page.evaluate("location.href")
    assert page.evaluate("localStorage.length") == 0
    page.screenshot(shots / "overview.png")
    page.click("#logout")
    page.wait_for("!document.getElementById('login').hidden")
    assert page.evaluate("sessionStorage.getItem('amqplite.auth')") is None


def test_open_a_queue_publish_get_and_purge(
    page: Browser, broker: Any, uid: str, shots: Path
) -> None:
    base = broker.management_url
    assert call(base, "PUT", f"/api/queues/{q('/')}/{q(uid)}", {"durable": True}).status == 201
    try:
        log_in(page)
        go(page, "#/queues")
        page.wait_for("document.querySelector('#queues[data-loaded]')")
        page.fill(".toolbar", {"filter": uid})
        row = f"#queues tr[data-name='//{uid}']"
        page.wait_for(
            f"document.querySelectorAll('#queues tbody tr').length === 1 && "
            f'document.querySelector("{row}")',
            "the filtered queue row",
        )
        page.click(f"{row} a")
        page.wait_for(
            f"document.querySelector('#app h1').textContent.includes({json.dumps(uid)})"
            " && document.getElementById('app').dataset.loaded"
        )
        page.fill("#publish", {"payload": "hello from the browser"})
        page.submit("#publish")
        page.wait_for(
            "document.querySelector('#q-ready b').textContent === '1'", "one ready message"
        )
        assert call(base, "GET", f"/api/queues/{q('/')}/{q(uid)}").json["messages_ready"] == 1
        page.fill("#get", {"ackmode": "ack_requeue_true", "count": "1"})
        page.submit("#get")
        page.wait_for("document.querySelector('#got pre.payload')", "the fetched message")
        assert page.text("#got pre.payload") == "hello from the browser"
        assert page.text("#q-age b") not in ("", "\u2013")  # the UI stamps a timestamp: age shows
        page.screenshot(shots / "queue-after-get.png")
        page.evaluate("window.confirm = () => true")
        page.click("#purge")
        page.wait_for("document.querySelector('#q-ready b').textContent === '0'", "an empty queue")
        assert call(base, "GET", f"/api/queues/{q('/')}/{q(uid)}").json["messages"] == 0
        page.click("#delete")
        page.wait_for("location.hash === '#/queues'", "the queue list after deleting")
        assert call(base, "GET", f"/api/queues/{q('/')}/{q(uid)}").status == 404
    finally:
        call(base, "DELETE", f"/api/queues/{q('/')}/{q(uid)}")


def test_create_a_user_and_a_policy(page: Browser, broker: Any, uid: str, shots: Path) -> None:
    base = broker.management_url
    try:
        log_in(page)
        go(page, "#/users")
        page.wait_for("document.querySelector('#users[data-loaded]')")
        page.fill("#add-user", {"name": uid, "password": "s3cret", "tags": "monitoring"})
        page.submit("#add-user")
        page.wait_for(
            f"document.querySelector(\"#users tr[data-name='{uid}']\")", "the new user row"
        )
        user = call(base, "GET", f"/api/users/{q(uid)}").json
        assert user["tags"] in (["monitoring"], "monitoring")
        assert call(base, "GET", "/api/whoami", auth=(uid, "s3cret")).status == 200
        go(page, "#/policies")
        page.wait_for("document.querySelector('#policies[data-loaded]')")
        definition = json.dumps({"max-length": 7})
        page.fill(
            "#add-policy",
            {
                "name": uid,
                "pattern": f"^{uid}$",
                "apply-to": "queues",
                "priority": "3",
                "definition": definition,
            },
        )
        page.submit("#add-policy")
        page.wait_for(
            f"document.querySelector(\"#policies tr[data-name='//{uid}']\")", "the policy row"
        )
        policy = call(base, "GET", f"/api/policies/{q('/')}/{q(uid)}").json
        assert policy["definition"] == {"max-length": 7}
        assert policy["priority"] == 3
        assert policy["apply-to"] == "queues"
        page.screenshot(shots / "policies.png")
    finally:
        call(base, "DELETE", f"/api/users/{q(uid)}")
        call(base, "DELETE", f"/api/policies/{q('/')}/{q(uid)}")


def test_queue_chart_moves_as_messages_arrive(
    page: Browser, broker: Any, uid: str, shots: Path
) -> None:
    base = broker.management_url
    assert call(base, "PUT", f"/api/queues/{q('/')}/{q(uid)}", {"durable": False}).status == 201
    try:
        log_in(page, refresh_ms=300)
        go(page, f"#/queues/%2F/{q(uid)}")
        page.wait_for("document.querySelector('#chart-queue[data-max=\"0\"]')", "an empty chart")
        for i in range(4):
            publish(base, uid, f"m{i}")
        page.wait_for("document.querySelector('#chart-queue[data-max=\"4\"]')", "the chart at 4")
        ready = page.evaluate(
            "document.querySelector('#chart-queue polyline[data-series=ready]').getAttribute('points')"
        )
        ys = [float(point.split(",")[1]) for point in ready.split()]
        assert max(ys) > min(ys)  # the line rose from 0 to 4 within the time range shown
        axis_labels = page.evaluate(
            "[...document.querySelectorAll('#chart-queue svg text')].map(t => t.textContent)"
        )
        assert "msgs" in axis_labels
        assert "time" in axis_labels
        assert any(":" in label for label in axis_labels)  # clock times on the time axis
        go(page, "#/")
        page.wait_for("document.querySelector('#chart-queued[data-samples]')")
        page.screenshot(shots / "overview-charts.png")
    finally:
        call(base, "DELETE", f"/api/queues/{q('/')}/{q(uid)}")


def test_queue_list_is_paged_sorted_and_filtered_by_the_server(
    page: Browser, broker: Any, uid: str, shots: Path
) -> None:
    base = broker.management_url
    names = [f"{uid}-{i:02d}" for i in range(25)]
    for name in names:
        assert call(base, "PUT", f"/api/queues/{q('/')}/{q(name)}", {}).status == 201
    try:
        log_in(page)
        go(page, "#/queues")
        page.wait_for("document.querySelector('#queues[data-loaded]')")
        page.fill(".toolbar", {"filter": uid, "page_size": "20"})
        rows = "[...document.querySelectorAll('#queues tbody tr')].map(r => r.dataset.name)"
        first = page.wait_for(
            f"(() => {{ const r = {rows}; return r.length === 20 && "
            f"document.querySelector('#queues').dataset.filter === {json.dumps(uid)} && r; }})()"
        )
        assert first == [f"//{name}" for name in names[:20]]
        page.click("#queues th[data-key=name]")  # sorted by name already: now descending
        page.wait_for(f"{rows}[0] === {json.dumps('//' + names[-1])}", "descending order")
        page.click(".pager button:last-child")
        last = page.wait_for(f"(() => {{ const r = {rows}; return r.length === 5 && r; }})()")
        assert last == [f"//{name}" for name in reversed(names[:5])]
        page.screenshot(shots / "queues-page-2.png")
    finally:
        for name in names:
            call(base, "DELETE", f"/api/queues/{q('/')}/{q(name)}")


def test_node_and_definitions_pages(page: Browser, broker: Any, shots: Path) -> None:
    log_in(page)
    go(page, "#/node")
    page.wait_for("document.querySelector('#node-usage #fd')", "the node's usage table")
    assert "of" in page.text("#mem td.num")
    assert page.text("#alarms")
    page.screenshot(shots / "node.png")
    go(page, "#/definitions")
    page.click("#export")
    page.wait_for("document.querySelector('#download')", "the export link")
    assert "queues" in page.text("#definitions-status")
