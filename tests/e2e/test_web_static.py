"""The web UI's files are served by the broker itself, publicly, and nothing else is."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest


def fetch(url: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET without credentials."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript"),
        ("ui.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("app.css", "text/css"),
    ],
)
def test_static_files_are_served_without_credentials(
    broker: Any, name: str, content_type: str
) -> None:
    if not broker.is_amqplite:
        pytest.skip("the web UI is amqplite's own")
    status, served_type, body = fetch(f"{broker.management_url}/static/{name}")
    assert status == 200
    assert served_type.startswith(content_type)
    assert len(body) > 100


def test_the_page_loads_every_script_it_names(broker: Any) -> None:
    if not broker.is_amqplite:
        pytest.skip("the web UI is amqplite's own")
    status, _, page = fetch(f"{broker.management_url}/")
    assert status == 200
    scripts = [part.split('"')[0] for part in page.decode().split('src="/static/')[1:]]
    assert "app.js" in scripts
    for script in scripts:
        assert fetch(f"{broker.management_url}/static/{script}")[0] == 200, script


@pytest.mark.parametrize("name", ["missing.js", "..%2Fapp.py", "..%2F..%2Fpyproject.toml", "."])
def test_anything_else_under_static_is_not_found(broker: Any, name: str) -> None:
    if not broker.is_amqplite:
        pytest.skip("the web UI is amqplite's own")
    status, _, _ = fetch(f"{broker.management_url}/static/{name}")
    assert status == 404


def test_the_ui_gets_no_browser_login_prompt_but_other_clients_do(broker: Any) -> None:
    if not broker.is_amqplite:
        pytest.skip("the web UI is amqplite's own")
    url = f"{broker.management_url}/api/overview"
    for headers, challenged in (({}, True), ({"X-Requested-With": "XMLHttpRequest"}, False)):
        request = urllib.request.Request(url, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 401
        assert ("WWW-Authenticate" in raised.value.headers) is challenged
