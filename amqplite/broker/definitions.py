"""Definitions applied to the broker idempotently, and exported/imported as RabbitMQ-shaped JSON.

Applying creates what is missing and leaves what already matches alone. An entity that exists
with other settings is reported as a conflict and left unchanged, never silently altered.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import attrs

from amqplite import __version__
from amqplite.broker.auth import (
    HASHING_ALGORITHM,
    Permission,
    TopicPermission,
    check_password,
    hash_password,
)
from amqplite.broker.broker import Broker
from amqplite.broker.plugin_api import Destination, freeze
from amqplite.config.definitions import (
    BindingDef,
    Definitions,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    TopicPermissionDef,
    UserDef,
    parse_definitions,
)
from amqplite.config.source import Source
from amqplite.protocol.errors import AMQPError

__all__ = ["ApplyReport", "apply_definitions", "export_definitions", "import_definitions"]


@attrs.frozen
class ApplyReport:
    """What applying definitions did: entities created, already equal, and conflicts left alone."""

    created: tuple[str, ...] = ()
    unchanged: int = 0
    conflicts: tuple[str, ...] = ()


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _differences(what: str, pairs: list[tuple[str, Any, Any]]) -> str | None:
    """A conflict message for the first setting that differs, or None if all are equal."""
    for key, defined, current in pairs:
        if freeze(defined) != freeze(current):
            return (
                f"{what} exists with {key} {_show(current)!r}, the definitions say "
                f"{_show(defined)!r} (left unchanged)"
            )
    return None


def _policy_api() -> Any:
    """The Policy class, once the policy module exists (None before)."""
    try:
        return importlib.import_module("amqplite.broker.policy").Policy
    except (ImportError, AttributeError):
        return None


class _Applier:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.created: list[str] = []
        self.conflicts: list[str] = []
        self.unchanged = 0

    def outcome(self, what: str, conflict: str | None, create: Any = None) -> None:
        if conflict is not None:
            self.conflicts.append(conflict)
        elif create is None:
            self.unchanged += 1
        else:
            try:
                create()
            except (AMQPError, ValueError, KeyError) as exc:
                self.conflicts.append(f"{what}: cannot be created: {exc}")
                return
            self.created.append(what)

    def vhost(self, name: str) -> None:
        broker = self.broker
        exists = name in broker.vhosts
        self.outcome(f"vhost '{name}'", None, None if exists else lambda: broker.add_vhost(name))

    def user(self, d: UserDef) -> None:
        what = f"user '{d.name}'"
        password_hash = d.password_hash or hash_password(d.password or "")
        existing = self.broker.users.get(d.name)
        if existing is None:
            self.outcome(
                what,
                None,
                lambda: self.broker.add_user(
                    d.name, d.password or "", d.tags, password_hash=password_hash
                ),
            )
            return
        same_password = (
            existing.password_hash == password_hash
            or (d.password is not None and check_password(d.password, existing.password_hash))
            # a hash from a RabbitMQ export: same password under another salt is no conflict
            or (bool(existing.password) and check_password(existing.password, password_hash))
        )
        conflict = None if same_password else f"{what} exists with a different password"
        conflict = conflict or _differences(what, [("tags", sorted(d.tags), sorted(existing.tags))])
        self.outcome(what, conflict)

    def permission(self, d: PermissionDef) -> None:
        what = f"permissions of user '{d.user}' in vhost '{d.vhost}'"
        wanted = Permission(d.configure, d.write, d.read)
        existing = self.broker.permissions_of(d.user, d.vhost)
        if existing is None:
            self.outcome(what, None, lambda: self.broker.set_permissions(d.user, d.vhost, wanted))
            return
        pairs = [
            (k, getattr(wanted, k), getattr(existing, k)) for k in ("configure", "write", "read")
        ]
        self.outcome(what, _differences(what, pairs))

    def topic_permission(self, d: TopicPermissionDef) -> None:
        what = (
            f"topic permissions of user '{d.user}' on exchange '{d.exchange}' in vhost '{d.vhost}'"
        )
        wanted = TopicPermission(d.exchange, d.write, d.read)
        existing = self.broker.topic_permission_of(d.user, d.vhost, d.exchange)
        if existing is None:
            broker = self.broker
            self.outcome(what, None, lambda: broker.set_topic_permission(d.user, d.vhost, wanted))
            return
        pairs = [(k, getattr(wanted, k), getattr(existing, k)) for k in ("write", "read")]
        self.outcome(what, _differences(what, pairs))

    def exchange(self, d: ExchangeDef) -> None:
        what = f"exchange '{d.name}' in vhost '{d.vhost}'"
        vhost = self.broker.vhosts.get(d.vhost)
        if vhost is None:
            self.conflicts.append(f"{what}: vhost '{d.vhost}' does not exist")
            return
        existing = vhost.exchanges.get(d.name)
        if existing is None:
            self.outcome(
                what,
                None,
                lambda: vhost.declare_exchange(
                    d.name,
                    d.type,
                    durable=d.durable,
                    auto_delete=d.auto_delete,
                    internal=d.internal,
                    arguments=dict(d.arguments),
                ),
            )
            return
        pairs = [
            ("type", d.type, existing.type_name),
            ("durable", d.durable, existing.durable),
            ("auto_delete", d.auto_delete, existing.auto_delete),
            ("internal", d.internal, existing.internal),
            ("arguments", d.arguments, existing.arguments),
        ]
        self.outcome(what, _differences(what, pairs))

    def queue(self, d: QueueDef) -> None:
        what = f"queue '{d.name}' in vhost '{d.vhost}'"
        vhost = self.broker.vhosts.get(d.vhost)
        if vhost is None:
            self.conflicts.append(f"{what}: vhost '{d.vhost}' does not exist")
            return
        existing = vhost.queues.get(d.name)
        if existing is None:
            self.outcome(
                what,
                None,
                lambda: vhost.declare_queue(
                    d.name,
                    durable=d.durable,
                    auto_delete=d.auto_delete,
                    arguments=dict(d.arguments),
                ),
            )
            return
        pairs = [
            ("exclusive", False, existing.exclusive_owner is not None),
            ("durable", d.durable, existing.durable),
            ("auto_delete", d.auto_delete, existing.auto_delete),
            ("arguments", d.arguments, existing.arguments),
        ]
        self.outcome(what, _differences(what, pairs))

    def binding(self, d: BindingDef) -> None:
        what = (
            f"binding from exchange '{d.source}' to {d.destination_type} '{d.destination}' "
            f"with routing key '{d.routing_key}' in vhost '{d.vhost}'"
        )
        vhost = self.broker.vhosts.get(d.vhost)
        if vhost is None:
            self.conflicts.append(f"{what}: vhost '{d.vhost}' does not exist")
            return
        kind: Literal["queue", "exchange"] = (
            "exchange" if d.destination_type == "exchange" else "queue"
        )
        destination = Destination(kind, d.destination)
        existing = vhost.bindings_by_source.get(d.source, {})
        if any(
            b.destination == destination
            and b.routing_key == d.routing_key
            and b.arguments_key == freeze(d.arguments)
            for b in existing
        ):
            self.outcome(what, None)
            return
        self.outcome(
            what,
            None,
            lambda: vhost.bind(d.source, destination, d.routing_key, dict(d.arguments)),
        )

    def policy(self, d: PolicyDef) -> None:
        what = f"policy '{d.name}' in vhost '{d.vhost}'"
        policy_cls = _policy_api()
        if policy_cls is None or not hasattr(self.broker, "set_policy"):
            self.conflicts.append(f"{what}: policies are not supported by this broker yet")
            return
        wanted = policy_cls(
            vhost=d.vhost,
            name=d.name,
            pattern=d.pattern,
            definition=dict(d.definition),
            priority=d.priority,
            apply_to=d.apply_to,
        )
        broker: Any = self.broker
        existing = next((p for p in broker.list_policies(d.vhost) if p.name == d.name), None)
        if existing is None:
            self.outcome(what, None, lambda: broker.set_policy(wanted))
            return
        pairs = [
            ("pattern", d.pattern, existing.pattern),
            ("apply-to", d.apply_to, existing.apply_to),
            ("priority", d.priority, existing.priority),
            ("definition", d.definition, existing.definition),
        ]
        self.outcome(what, _differences(what, pairs))


def apply_definitions(broker: Broker, definitions: Definitions) -> ApplyReport:
    """Create what is missing; report (and leave alone) what exists with other settings."""
    applier = _Applier(broker)
    for v in definitions.vhosts:
        applier.vhost(v.name)
        for limit, value in v.limits.items():  # the file's values win over recorded ones
            if broker.vhost_limits.get(v.name, {}).get(limit) != value:
                broker.set_limit("vhost", v.name, limit, value)
    for u in definitions.users:
        applier.user(u)
        for limit, value in u.limits.items():
            if broker.user_limits.get(u.name, {}).get(limit) != value:
                broker.set_limit("user", u.name, limit, value)
    for p in definitions.permissions:
        applier.permission(p)
    for t in definitions.topic_permissions:
        applier.topic_permission(t)
    for e in definitions.exchanges:
        applier.exchange(e)
    for q in definitions.queues:
        applier.queue(q)
    for b in definitions.bindings:
        applier.binding(b)
    for pol in definitions.policies:
        applier.policy(pol)
    return ApplyReport(tuple(applier.created), applier.unchanged, tuple(applier.conflicts))


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a decoded field value (bytes become text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def export_definitions(broker: Broker) -> dict[str, Any]:
    """Everything but messages, in RabbitMQ's definitions JSON shape, in a stable order."""
    users = [
        {
            "name": u.name,
            "password_hash": u.password_hash,
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": list(u.tags),
            **({"limits": broker.user_limits[u.name]} if broker.user_limits.get(u.name) else {}),
        }
        for u in sorted(broker.users.values(), key=lambda u: u.name)
    ]
    permissions = [
        {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
        for (user, vhost), p in sorted(broker.permissions.items())
    ]
    exchanges: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for vname in sorted(broker.vhosts):
        vhost = broker.vhosts[vname]
        for ex in sorted(vhost.exchanges.values(), key=lambda e: e.name):
            if ex.name == "" or ex.name.startswith("amq."):
                continue
            exchanges.append(
                {
                    "name": ex.name,
                    "vhost": vname,
                    "type": ex.type_name,
                    "durable": ex.durable,
                    "auto_delete": ex.auto_delete,
                    "internal": ex.internal,
                    "arguments": _plain(ex.arguments),
                }
            )
        exported_queues = set()
        for q in sorted(vhost.queues.values(), key=lambda q: q.name):
            if q.exclusive_owner is not None:
                continue
            exported_queues.add(q.name)
            queues.append(
                {
                    "name": q.name,
                    "vhost": vname,
                    "durable": q.durable,
                    "auto_delete": q.auto_delete,
                    "arguments": _plain(q.arguments),
                    "type": "classic",
                }
            )
        vhost_bindings = []
        for b in vhost.bindings():
            if b.destination.kind == "queue" and b.destination.name not in exported_queues:
                continue
            vhost_bindings.append(
                {
                    "source": b.source,
                    "vhost": vname,
                    "destination": b.destination.name,
                    "destination_type": b.destination.kind,
                    "routing_key": b.routing_key,
                    "arguments": _plain(b.arguments),
                }
            )
        vhost_bindings.sort(
            key=lambda b: (
                b["source"],
                b["destination_type"],
                b["destination"],
                b["routing_key"],
                repr(freeze(b["arguments"])),
            )
        )
        bindings.extend(vhost_bindings)
    policies: list[dict[str, Any]] = []
    list_policies = getattr(broker, "list_policies", None)
    if list_policies is not None:
        for p in sorted(list_policies(), key=lambda p: (p.vhost, p.name)):
            policies.append(
                {
                    "vhost": p.vhost,
                    "name": p.name,
                    "pattern": p.pattern,
                    "apply-to": p.apply_to,
                    "definition": _plain(p.definition),
                    "priority": p.priority,
                }
            )
    return {
        "product_name": "amqplite",
        "product_version": __version__,
        "users": users,
        "vhosts": [
            {
                "name": name,
                **({"limits": limits} if (limits := broker.vhost_limits.get(name)) else {}),
            }
            for name in sorted(broker.vhosts)
        ],
        "permissions": permissions,
        "topic_permissions": [
            {"user": user, "vhost": vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
            for (user, vhost), by_exchange in sorted(broker.topic_permissions.items())
            for t in sorted(by_exchange.values(), key=lambda t: t.exchange)
        ],
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


def import_definitions(broker: Broker, document: dict[str, Any]) -> list[str]:
    """Apply a definitions document (RabbitMQ's JSON shape); the conflicts, empty if none.

    A malformed document raises ConfigError (naming the key, the bad value and what was
    expected) before anything is changed.
    """
    definitions = parse_definitions(Source("(imported definitions)", document))
    return list(apply_definitions(broker, definitions).conflicts)
