"""The web UI's static files (HTML, JavaScript, CSS) shipped in amqplite/management/static."""

from __future__ import annotations

from functools import cache
from importlib import resources as importlib_resources

from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.routing import PUBLIC, Router

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/static/{name}", static_file, PUBLIC)


@cache
def shipped_files() -> dict[str, bytes]:
    """Every file of the static directory by name, read once."""
    folder = importlib_resources.files("amqplite.management") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in CONTENT_TYPES)
    }


def static_file(call: Call) -> Response:
    """One static file by name; 404 for anything not shipped (no paths, no listing)."""
    name = call.params["name"]
    body = shipped_files().get(name)
    if body is None:
        raise HttpError(404, f"no static file {name!r}")
    suffix = name[name.rfind(".") :]
    return Response(200, body, CONTENT_TYPES[suffix])
