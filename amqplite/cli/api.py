"""A small client of the management HTTP API (basic auth, JSON), for ctl and definitions."""

from __future__ import annotations

import argparse
import base64
import json
import os
import urllib.parse
from typing import Any

import attrs

DEFAULT_URL = "http://127.0.0.1:15672"


class ApiError(Exception):
    """The management API could not be reached or refused the request."""

    def __init__(self, message: str, body: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.body = body
        self.status = status


@attrs.frozen
class ManagementClient:
    """Where the management API is and who we are."""

    url: str = DEFAULT_URL
    user: str = "guest"
    password: str = "guest"
    timeout: float = 10.0
    source: str = "default"  # where url came from: --url, AMQPLITE_MANAGEMENT_URL, a file

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        """Send a request; the decoded JSON answer (None when the answer is empty)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        import urllib.error  # here: `serve` never pays for the HTTP client
        import urllib.request

        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        req.add_header("Authorization", f"Basic {token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            parsed: Any = None
            try:
                parsed = json.loads(detail)
                detail = parsed.get("reason") or parsed.get("error") or detail
            except (ValueError, AttributeError):
                pass
            message = f"{method} {path}: HTTP {exc.code}: {detail}".strip()
            raise ApiError(message, parsed, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the management API at {self.url}: {reason}") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(f"{method} {path}: the answer is not JSON") from None

    def get(self, path: str) -> Any:
        """GET a JSON resource."""
        return self.request("GET", path)


def quote(segment: str) -> str:
    """A path segment as the API wants it (the vhost / is %2F)."""
    return urllib.parse.quote(segment, safe="")


def client_from(
    args: argparse.Namespace, default_url: str, default_source: str = "default"
) -> ManagementClient:
    """A client from --url/--user/--password, the environment, or the defaults."""
    env_url = os.environ.get("AMQPLITE_MANAGEMENT_URL")
    if args.url:
        url, source = args.url, "--url"
    elif env_url:
        url, source = env_url, "AMQPLITE_MANAGEMENT_URL"
    else:
        url, source = default_url, default_source
    return ManagementClient(
        url=url,
        source=source,
        user=args.user or os.environ.get("AMQPLITE_USER") or "guest",
        password=args.password or os.environ.get("AMQPLITE_PASSWORD") or "guest",
    )
