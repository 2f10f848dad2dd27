"""Routes by method and path pattern, and who may call each (public, any user, a tag level)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from amqplite.management.http import HttpError, Response

# Who may call a route: anyone, any authenticated user (SQS-style messaging), or a tag level.
PUBLIC = "public"
USER = "user"
MANAGEMENT = "management"
MONITORING = "monitoring"
POLICYMAKER = "policymaker"
ADMINISTRATOR = "administrator"

MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})
MONITORING_TAGS = frozenset({"monitoring", "administrator"})
LEVEL_TAGS = {
    MANAGEMENT: MANAGEMENT_TAGS,
    MONITORING: MONITORING_TAGS,
    POLICYMAKER: frozenset({"policymaker", "administrator"}),
    ADMINISTRATOR: frozenset({"administrator"}),
}
"""The user tags that grant each level (PUBLIC and USER need none)."""

CallT = TypeVar("CallT")


@attrs.frozen
class Route(Generic[CallT]):
    """One method + path pattern and who may call it."""

    method: str
    pattern: tuple[str, ...]  # literal segments, or "{name}" parameters
    handler: Callable[[CallT], Response]
    level: str


class Router(Generic[CallT]):
    """Routes by segment patterns; tells 404 (no path) from 405 (path without that method)."""

    def __init__(self) -> None:
        self.routes: list[Route[CallT]] = []

    def add(
        self,
        method: str,
        path: str,
        handler: Callable[[CallT], Response],
        level: str = MANAGEMENT,
    ) -> None:
        """Register a handler for a method and a `/api/queues/{vhost}/{name}` style pattern."""
        pattern = tuple(path.strip("/").split("/")) if path != "/" else ("",)
        self.routes.append(Route(method, pattern, handler, level))

    def match(self, method: str, segments: list[str]) -> tuple[Route[CallT], dict[str, str]]:
        """The route and its parameters; HttpError 404/405 when none fits."""
        allowed: list[str] = []
        segments = segments or [""]
        for route in self.routes:
            params = match_pattern(route.pattern, segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise HttpError(
                405,
                f"method {method} not allowed here",
                headers=(("allow", ", ".join(sorted(set(allowed)))),),
            )
        raise HttpError(404, "Not Found", "Object Not Found")


def match_pattern(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """The `{name}` parameters if the segments fit the pattern, else None."""
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def split_path(path: str) -> list[str]:
    """Path segments, each percent-decoded on its own (so `%2F` stays inside one segment)."""
    parts = path.split("/")
    if parts and parts[0] == "":
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    return [urllib.parse.unquote(p) for p in parts]


def parse_query(query: str) -> dict[str, str]:
    """The query string as a dict (last value wins)."""
    return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
