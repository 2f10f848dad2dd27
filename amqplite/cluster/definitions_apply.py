"""Apply a definitions item from etcd to the local broker, or remove the entity it names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.broker.definitions import import_definitions
from amqplite.broker.plugin_api import Destination
from amqplite.broker.policy import Policy
from amqplite.config.definitions import parse_definitions
from amqplite.config.source import ConfigError, Source
from amqplite.protocol.errors import AMQPError

REPLACED_KINDS = ("users", "permissions", "policies")  # etcd's version replaces the local one


def apply_put(
    broker: Broker,
    kind: str,
    item: Mapping[str, Any],
    context: Mapping[str, list[dict[str, Any]]] | None = None,
) -> str | None:
    """Make the broker hold the item; a message when it keeps a different version (or cannot).

    `context` holds the items a binding refers to (its ends), which an import needs to see.
    """
    try:
        if kind in REPLACED_KINDS:
            _replace(broker, kind, item)
            return None
        document = {k: list(v) for k, v in (context or {}).items()}
        document.setdefault(kind, []).append(dict(item))
        conflicts = import_definitions(broker, document)
    except (ConfigError, AMQPError, KeyError, ValueError) as exc:
        return f"{kind} item {dict(item)!r} not applied: {exc}"
    return conflicts[0] if conflicts else None


def _replace(broker: Broker, kind: str, item: Mapping[str, Any]) -> None:
    """Users, permissions and policies: etcd's version wins over the local one."""
    parsed = parse_definitions(Source("etcd", {kind: [dict(item)]}))
    if kind == "users":
        user = parsed.users[0]
        existing = broker.users.get(user.name)
        if existing is None or (existing.password_hash, existing.tags) != (
            user.password_hash,
            tuple(user.tags),
        ):
            broker.add_user(user.name, "", user.tags, password_hash=user.password_hash or "")
    elif kind == "permissions":
        perm = parsed.permissions[0]
        wanted = Permission(perm.configure, perm.write, perm.read)
        if broker.permissions_of(perm.user, perm.vhost) != wanted:
            broker.set_permissions(perm.user, perm.vhost, wanted)
    else:
        pol = parsed.policies[0]
        wanted_policy = Policy(
            vhost=pol.vhost,
            name=pol.name,
            pattern=pol.pattern,
            definition=dict(pol.definition),
            priority=pol.priority,
            apply_to=pol.apply_to,
        )
        if wanted_policy not in broker.list_policies(pol.vhost):
            broker.set_policy(wanted_policy)


def apply_delete(broker: Broker, kind: str, item: Mapping[str, Any]) -> None:
    """Remove the entity the item names, if the broker has it."""
    if kind == "vhosts":
        if item["name"] in broker.vhosts:
            broker.delete_vhost(item["name"])
    elif kind == "users":
        if item["name"] in broker.users:
            broker.delete_user(item["name"])
    elif kind == "permissions":
        broker.clear_permissions(item["user"], item["vhost"])
    elif kind == "policies":
        if (item["vhost"], item["name"]) in broker.policies:
            broker.clear_policy(item["vhost"], item["name"])
    else:
        vhost = broker.vhosts.get(item["vhost"])
        if vhost is None:
            return
        if kind == "exchanges":
            if item["name"] in vhost.exchanges:
                vhost.delete_exchange(item["name"])
        elif kind == "queues":
            queue = vhost.queues.get(item["name"])
            if queue is not None:
                vhost.delete_queue(queue.name, owner=queue.exclusive_owner)
        elif kind == "bindings":
            name = item["destination"]
            is_queue = item["destination_type"] == "queue"
            vhost.unbind(
                item["source"],
                Destination.queue(name) if is_queue else Destination("exchange", name),
                item["routing_key"],
                dict(item.get("arguments") or {}),
            )
