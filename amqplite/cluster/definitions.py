"""Definitions in etcd, pure: durable entities as keys, what to write after a local change."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from amqplite.cluster.keys import cluster_prefix

# Applied in this order (a queue needs its vhost, a binding its ends); deleted in reverse.
KINDS = ("vhosts", "users", "permissions", "policies", "exchanges", "queues", "bindings")

Item = dict[str, Any]  # one item of RabbitMQ's definitions JSON


def defs_prefix(cluster: str) -> bytes:
    """/amqplite/<cluster>/defs/: one key per durable entity."""
    return cluster_prefix(cluster) + b"defs/"


def _q(text: Any) -> str:
    return urllib.parse.quote(str(text), safe="")


def item_path(kind: str, item: Mapping[str, Any]) -> str:
    """The entity's path under defs/: <kind>/<vhost>/<name>, names percent-encoded."""
    if kind in ("vhosts", "users"):
        parts = [item["name"]]
    elif kind == "permissions":
        parts = [item["vhost"], item["user"]]
    elif kind in ("policies", "exchanges", "queues"):
        parts = [item["vhost"], item["name"]]
    elif kind == "bindings":
        identity = json.dumps([item["routing_key"], item["arguments"]], sort_keys=True)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        parts = [item["vhost"], item["source"], item["destination_type"], item["destination"]]
        parts.append(digest)
    else:
        raise ValueError(f"not a definitions kind: {kind}")
    return "/".join([kind, *(_q(p) for p in parts)])


def item_key(cluster: str, kind: str, item: Mapping[str, Any]) -> bytes:
    """The etcd key of one entity."""
    return defs_prefix(cluster) + item_path(kind, item).encode()


def kind_of_key(cluster: str, key: bytes) -> str | None:
    """The kind of a defs key, or None for a key that is not one."""
    prefix = defs_prefix(cluster)
    if not key.startswith(prefix):
        return None
    kind = key[len(prefix) :].split(b"/", 1)[0].decode("ascii", "replace")
    return kind if kind in KINDS else None


def encode_item(item: Mapping[str, Any]) -> bytes:
    """An item as the value of its key: canonical JSON, so equal items are equal bytes."""
    return json.dumps(item, sort_keys=True, separators=(",", ":")).encode()


def decode_item(value: bytes) -> Item:
    """An item from its key's value (ValueError if it is not a JSON object)."""
    obj = json.loads(value)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def durable_items(cluster: str, document: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The shared part of an export: lasting exchanges, queues, their bindings; vhosts, users, policies."""
    exchanges = [e for e in document.get("exchanges", ()) if _shared(e)]
    queues = [q for q in document.get("queues", ()) if _shared(q)]
    durable_exchanges = {(e["vhost"], e["name"]) for e in exchanges}
    durable_queues = {(q["vhost"], q["name"]) for q in queues}

    def durable_binding(b: Mapping[str, Any]) -> bool:
        source = b["source"]
        source_ok = source.startswith("amq.") or (b["vhost"], source) in durable_exchanges
        ends = durable_queues if b["destination_type"] == "queue" else durable_exchanges
        dest = b["destination"]
        dest_ok = (b["vhost"], dest) in ends or (
            b["destination_type"] == "exchange" and dest.startswith("amq.")
        )
        return bool(source) and source_ok and dest_ok

    chosen: dict[str, Iterable[Mapping[str, Any]]] = {
        "vhosts": document.get("vhosts", ()),
        "users": document.get("users", ()),
        "permissions": document.get("permissions", ()),
        "policies": document.get("policies", ()),
        "exchanges": exchanges,
        "queues": queues,
        "bindings": [b for b in document.get("bindings", ()) if durable_binding(b)],
    }
    return {
        item_key(cluster, kind, item): encode_item(item) for kind in KINDS for item in chosen[kind]
    }


def _shared(item: Mapping[str, Any]) -> bool:
    """Durable and not auto-delete: an auto-delete entity lives and dies with local use."""
    return bool(item.get("durable")) and not item.get("auto_delete")


@attrs.frozen
class Write:
    """One change to make in etcd: create if absent, update, or delete if still ours."""

    op: Literal["create", "update", "delete"]
    key: bytes
    value: bytes  # the new value; for a delete, the value we expect to remove


@attrs.define
class DefinitionsState:
    """What etcd holds (as last seen) and what this node last agreed with it, per key."""

    remote: dict[bytes, bytes] = attrs.Factory(dict)
    agreed: dict[bytes, bytes] = attrs.Factory(dict)  # local values known to match or to conflict
    revision: int = 0  # the etcd revision `remote` is current to

    def writes(self, current: Mapping[bytes, bytes]) -> list[Write]:
        """What to write after local changes: `current` is the node's durable items now."""
        out: list[Write] = []
        for key, value in current.items():
            if self.agreed.get(key) == value:
                continue
            remote = self.remote.get(key)
            if remote == value:
                self.agreed[key] = value
            elif remote is None:
                out.append(Write("create", key, value))
            elif key in self.agreed:  # changed here since we last agreed: ours is newer
                out.append(Write("update", key, value))
            else:  # found here and in etcd with other settings: etcd's stays, ours is kept
                self.agreed[key] = value
        for key in [k for k in self.agreed if k not in current]:
            value = self.agreed[key]
            if self.remote.get(key) == value:
                out.append(Write("delete", key, value))  # the writer forgets it once done
            else:  # etcd holds another version (or none): nothing of ours to delete
                del self.agreed[key]
        return out
