"""/api/amqplite/quarantine: journals of queues that could not be recovered, kept aside by the store."""

from __future__ import annotations

from typing import Any

from amqplite.management.app import Call
from amqplite.management.http import Response
from amqplite.management.routing import MANAGEMENT, Router


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/amqplite/quarantine", list_quarantine, MANAGEMENT)


def list_quarantine(call: Call) -> Response:
    """Each quarantined queue journal: vhost, name, why, where and how many bytes."""
    listing = getattr(call.app.store, "quarantined", None)
    items: list[dict[str, Any]] = []
    for entry in listing() if listing is not None else []:
        items.append(
            {
                "vhost": entry.vhost,
                "name": entry.name,
                "reason": entry.reason,
                "path": str(entry.path),
                "bytes": entry.bytes,
                "arguments": entry.arguments,
            }
        )
    return Response.json(items)
