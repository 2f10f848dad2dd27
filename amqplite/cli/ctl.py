"""`amqplite ctl`: list and act on a running broker through its management API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from amqplite.cli.api import ApiError, ManagementClient, quote

# What each listing shows: (column header, dotted path into the API's JSON object).
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "queues": [
        ("vhost", "vhost"),
        ("name", "name"),
        ("ready", "messages_ready"),
        ("unacked", "messages_unacknowledged"),
        ("consumers", "consumers"),
        ("publish/s", "message_stats.publish_details.rate"),
        ("deliver/s", "message_stats.deliver_get_details.rate"),
        ("ack/s", "message_stats.ack_details.rate"),
    ],
    "exchanges": [
        ("vhost", "vhost"),
        ("name", "name"),
        ("type", "type"),
        ("durable", "durable"),
        ("auto_delete", "auto_delete"),
        ("internal", "internal"),
        ("arguments", "arguments"),
    ],
    "bindings": [
        ("vhost", "vhost"),
        ("source", "source"),
        ("destination_type", "destination_type"),
        ("destination", "destination"),
        ("routing_key", "routing_key"),
        ("arguments", "arguments"),
    ],
    "connections": [
        ("name", "name"),
        ("user", "user"),
        ("vhost", "vhost"),
        ("channels", "channels"),
        ("state", "state"),
        ("recv/s", "recv_oct_details.rate"),
        ("send/s", "send_oct_details.rate"),
    ],
    "channels": [
        ("name", "name"),
        ("user", "user"),
        ("vhost", "vhost"),
        ("consumers", "consumer_count"),
        ("unacked", "messages_unacknowledged"),
        ("prefetch", "prefetch_count"),
        ("confirm", "confirm"),
    ],
    "consumers": [
        ("vhost", "queue.vhost"),
        ("queue", "queue.name"),
        ("consumer_tag", "consumer_tag"),
        ("channel", "channel_details.name"),
        ("ack_required", "ack_required"),
        ("prefetch", "prefetch_count"),
    ],
    "scheduled": [
        ("vhost", "vhost"),
        ("exchange", "exchange"),
        ("scheduled", "scheduled"),
        ("next_due", "next_due"),
    ],
    "streams": [
        ("vhost", "vhost"),
        ("name", "name"),
        ("messages", "stream.messages"),
        ("first", "stream.first_offset"),
        ("last", "stream.last_offset"),
        ("bytes", "stream.bytes_on_disk"),
        ("segments", "stream.segments"),
        ("consumers (offset, lag)", "stream.consumer_offsets"),
    ],
    "quarantine": [
        ("vhost", "vhost"),
        ("name", "name"),
        ("bytes", "bytes"),
        ("path", "path"),
        ("reason", "reason"),
    ],
}

NODE_COLUMNS = [
    ("node", "name"),
    ("amqp", "amqp"),
    ("management", "management"),
    ("link", "cluster"),
    ("running", "running"),
    ("this", "this_node"),
]

MIRROR_HEADERS = ("vhost", "queue", "leader", "members", "online", "in_sync", "lag")

_DEFAULT_SORT = {
    "queues": ("vhost", "name"),
    "exchanges": ("vhost", "name"),
    "bindings": ("vhost", "source", "destination", "routing_key"),
    "connections": ("name",),
    "channels": ("name",),
    "consumers": ("queue.vhost", "queue.name", "consumer_tag"),
    "quarantine": ("vhost", "name", "path"),
    "scheduled": ("vhost", "exchange"),
    "streams": ("vhost", "name"),
}
# amqplite's own listings (not per vhost)
_PATHS = {"quarantine": "/api/amqplite/quarantine", "scheduled": "/api/amqplite/scheduled"}
SCHEDULED_COLUMNS = [("id", "id"), ("due", "due"), ("routing_key", "routing_key")]
SCHEDULED_COLUMNS += [("bytes", "payload_bytes")]


def lookup(item: Any, path: str) -> Any:
    """The value at a dotted path of a JSON object, or None."""
    for part in path.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def cell(value: Any) -> str:
    """One table cell: booleans and numbers as an operator reads them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True) if value else ""
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, numbers right-aligned, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(_is_number(row[i]) for row in rows if row[i])
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def list_items(client: ManagementClient, kind: str, vhost: str | None) -> list[dict[str, Any]]:
    """The API's objects of one kind, optionally of one vhost, in a stable order."""
    source = "queues" if kind == "streams" else kind
    path = _PATHS.get(kind) or f"/api/{source}" + (f"/{quote(vhost)}" if vhost else "")
    items = client.get(path) or []
    if kind == "streams":  # stream queues only, with their offsets and named consumers
        items = [it for it in items if isinstance(it, dict) and it.get("type") == "stream"]
    if kind in _PATHS and vhost:
        items = [it for it in items if it.get("vhost") == vhost]
    if isinstance(items, dict) and "items" in items:  # a paginated answer
        items = items["items"]
    keys = _DEFAULT_SORT[kind]
    return sorted(items, key=lambda it: tuple(cell(lookup(it, k)) for k in keys))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ctl` subcommands."""
    parser.add_argument("--url", help="management API (env AMQPLITE_MANAGEMENT_URL)")
    parser.add_argument("--user", help="user (env AMQPLITE_USER, default guest)")
    parser.add_argument("--password", help="password (env AMQPLITE_PASSWORD, default guest)")
    parser.add_argument("--json", action="store_true", help="JSON output for scripts")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list queues, exchanges, bindings, connections, ...")
    listing.add_argument("kind", choices=sorted(COLUMNS))
    listing.add_argument("--vhost", help="only this vhost")
    for action, helptext in (
        ("purge", "remove every ready message of a queue"),
        ("delete-queue", "delete a queue"),
    ):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("queue")
        p.add_argument("--vhost", default="/")
    for action, helptext in (
        ("scheduled", "the messages an exchange holds back (x-delayed-message), earliest first"),
        ("show-scheduled", "one scheduled message, with its payload"),
        ("cancel-scheduled", "drop one scheduled message: it is never routed"),
    ):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("exchange")
        if action != "scheduled":
            p.add_argument("id", help="the message's id, as `ctl scheduled EXCHANGE` shows it")
        else:
            p.add_argument("--count", type=int, default=100, help="at most this many (100)")
        p.add_argument("--vhost", default="/")
    sub.add_parser(
        "cluster",
        help="the cluster's nodes, as registered in etcd, and each mirrored queue's leader, "
        "members, in-sync set and lag",
    )
    close = sub.add_parser("close-connection", help="close a client connection")
    close.add_argument("name", help="the connection's name, as `ctl list connections` shows it")
    close.add_argument("--reason", default="closed via amqplite ctl")


def run(args: argparse.Namespace, client: ManagementClient, out: TextIO) -> int:
    """Execute a parsed `ctl` command; the exit status."""
    if args.action == "list":
        items = list_items(client, args.kind, args.vhost)
        if args.json:
            out.write(json.dumps(items, indent=2, sort_keys=True) + "\n")
            return 0
        columns = COLUMNS[args.kind]
        rows = [[cell(lookup(it, path)) for _, path in columns] for it in items]
        out.write(format_table([h for h, _ in columns], rows) + "\n")
        return 0
    if args.action == "cluster":
        nodes = sorted(client.get("/api/nodes") or [], key=lambda n: str(n.get("name")))
        if args.json:
            out.write(json.dumps(nodes, indent=2, sort_keys=True) + "\n")
            return 0
        rows = [[cell(lookup(n, path)) for _, path in NODE_COLUMNS] for n in nodes]
        out.write(format_table([h for h, _ in NODE_COLUMNS], rows) + "\n")
        mirrored = mirrored_queues(client, nodes)
        if mirrored:
            out.write("\n" + format_table(MIRROR_HEADERS, [mirror_row(q) for q in mirrored]) + "\n")
        return 0
    if args.action in ("purge", "delete-queue"):
        path = f"/api/queues/{quote(args.vhost)}/{quote(args.queue)}"
        missing = f"no queue {args.queue!r} in vhost {args.vhost!r} at {client.url}"
        if args.action == "purge":
            _act(client, "DELETE", path + "/contents", missing)
            return _done(args, out, {"purged": args.queue, "vhost": args.vhost})
        _act(client, "DELETE", path, missing)
        return _done(args, out, {"deleted": args.queue, "vhost": args.vhost})
    if args.action in ("scheduled", "show-scheduled", "cancel-scheduled"):
        return _scheduled(args, client, out)
    if args.action == "close-connection":
        missing = f"no connection named {args.name!r} at {client.url}"
        path = f"/api/connections/{quote(args.name)}"
        _act(client, "DELETE", path, missing, headers={"X-Reason": args.reason})
        return _done(args, out, {"closed": args.name})
    return 2


def mirrored_queues(client: ManagementClient, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mirrored queues, each as its leader's management API shows it (with in_sync and lag)."""
    queues = [q for q in client.get("/api/queues") or [] if isinstance(q, dict) and "members" in q]
    urls = {str(n.get("name")): n.get("management") for n in nodes}
    listings: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = {}
    shown = []
    for queue in queues:
        leader = str(queue.get("leader") or "")
        url = urls.get(leader)
        if "lag" not in queue and url and leader not in listings:
            listings[leader] = {}
            try:  # the leader alone knows how far each member is behind
                items = attrs.evolve(client, url=str(url)).get("/api/queues") or []
            except ApiError:
                items = []
            listings[leader] = {(q.get("vhost"), q.get("name")): q for q in items if "lag" in q}
        key = (queue.get("vhost"), queue.get("name"))
        shown.append(listings.get(leader, {}).get(key, queue))
    return sorted(shown, key=lambda q: (str(q.get("vhost")), str(q.get("name"))))


def mirror_row(queue: dict[str, Any]) -> list[str]:
    """One mirrored queue as a row of MIRROR_HEADERS (lag: member=records behind)."""
    lag = queue.get("lag")
    return [
        str(queue.get("vhost", "")),
        str(queue.get("name", "")),
        str(queue.get("leader") or "-"),
        ",".join(queue.get("members") or []),
        ",".join(queue.get("online") or []),
        ",".join(queue["in_sync"]) if "in_sync" in queue else "?",
        " ".join(f"{m}={n}" for m, n in lag.items()) if isinstance(lag, dict) else "?",
    ]


def _scheduled(args: argparse.Namespace, client: ManagementClient, out: TextIO) -> int:
    """List, show or cancel the messages an exchange holds back."""
    path = f"/api/amqplite/scheduled/{quote(args.vhost)}/{quote(args.exchange)}"
    missing = f"no exchange {args.exchange!r} in vhost {args.vhost!r} at {client.url}"
    if args.action == "scheduled":
        try:
            item = client.get(f"{path}?count={args.count}")
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(missing, exc.body, 404) from None
            raise
        if args.json:
            out.write(json.dumps(item, indent=2, sort_keys=True) + "\n")
            return 0
        out.write(f"{item['scheduled']} scheduled, next due {item['next_due'] or '-'}\n")
        rows = [[cell(lookup(m, p)) for _, p in SCHEDULED_COLUMNS] for m in item["messages"]]
        out.write(format_table([h for h, _ in SCHEDULED_COLUMNS], rows) + "\n")
        return 0
    path += f"/{quote(args.id)}"
    missing = f"no scheduled message {args.id} in exchange {args.exchange!r} at {client.url}"
    if args.action == "show-scheduled":
        try:
            item = client.get(path)
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(missing, exc.body, 404) from None
            raise
        out.write(json.dumps(item, indent=2, sort_keys=True) + "\n")
        return 0
    _act(client, "DELETE", path, missing)
    return _done(args, out, {"cancelled": args.id, "exchange": args.exchange})


def _act(
    client: ManagementClient,
    method: str,
    path: str,
    missing: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Send a request; a 404 becomes an ApiError that names what is missing."""
    try:
        client.request(method, path, headers=headers)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(missing, exc.body, 404) from None
        raise


def _done(args: argparse.Namespace, out: TextIO, result: dict[str, str]) -> int:
    if args.json:
        out.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        out.write(" ".join(f"{k}={v}" for k, v in result.items()) + "\n")
    return 0
