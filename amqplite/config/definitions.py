"""conf/definitions.yaml: vhosts, users, permissions, exchanges, queues, bindings and policies.

The vocabulary is RabbitMQ's definitions JSON, written in YAML; a JSON export of RabbitMQ or of
amqplite parses too. Every error names the file, the line, the key, the bad value and what was
expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from amqplite.config.source import ConfigError, Path_, Source, read_yaml

__all__ = [
    "BindingDef",
    "ConfigError",
    "Definitions",
    "ExchangeDef",
    "PermissionDef",
    "PolicyDef",
    "QueueDef",
    "TopicPermissionDef",
    "UserDef",
    "VHostDef",
    "load_definitions",
    "parse_definitions",
]

BUILTIN_EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
BUILTIN_EXCHANGES = ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match")


@attrs.frozen
class VHostDef:
    """A virtual host, with its limits (max-connections, max-queues) if any."""

    name: str
    limits: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class UserDef:
    """A user: a plain password (hashed when applied) or a RabbitMQ-style password_hash."""

    name: str
    password: str | None = None
    password_hash: str | None = None
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = attrs.field(factory=dict)  # max-connections, max-channels


@attrs.frozen
class PermissionDef:
    """What a user may configure, write and read in a vhost (regular expressions)."""

    user: str
    vhost: str = "/"
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@attrs.frozen
class TopicPermissionDef:
    """The routing keys a user may publish (write) and bind (read) with on a topic exchange."""

    user: str
    exchange: str
    vhost: str = "/"
    write: str = ".*"
    read: str = ".*"


@attrs.frozen
class ExchangeDef:
    """An exchange and its settings."""

    name: str
    vhost: str = "/"
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class QueueDef:
    """A queue and its arguments."""

    name: str
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = attrs.field(factory=dict)
    type: str = "classic"  # RabbitMQ's export names the queue type; amqplite queues are classic


@attrs.frozen
class BindingDef:
    """A binding from an exchange to a queue or to another exchange."""

    source: str
    destination: str
    vhost: str = "/"
    destination_type: str = "queue"
    routing_key: str = ""
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class PolicyDef:
    """A policy: queue or exchange settings applied by name pattern."""

    name: str
    pattern: str
    definition: dict[str, Any]
    vhost: str = "/"
    priority: int = 0
    apply_to: str = "queues"


@attrs.frozen
class Definitions:
    """Everything a definitions file declares."""

    vhosts: tuple[VHostDef, ...] = ()
    users: tuple[UserDef, ...] = ()
    permissions: tuple[PermissionDef, ...] = ()
    topic_permissions: tuple[TopicPermissionDef, ...] = ()
    exchanges: tuple[ExchangeDef, ...] = ()
    queues: tuple[QueueDef, ...] = ()
    bindings: tuple[BindingDef, ...] = ()
    policies: tuple[PolicyDef, ...] = ()


# -- value checks: each returns the converted value or raises ValueError(expected) ----------

Check = Callable[[Any], Any]


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _name(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value.encode()) > 255:
        raise ValueError("a name of 1 to 255 bytes")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _int(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (low is None or value >= low) and (high is None or value <= high):
            return int(value)
        if low is not None and high is not None:
            raise ValueError(f"an integer from {low} to {high}")
        if low is not None:
            raise ValueError(f"an integer >= {low}")
        raise ValueError("an integer")

    return check


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return check


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a regular expression (a string)")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"a valid regular expression ({exc})") from None
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # RabbitMQ before 3.9 writes "administrator,monitoring"
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise ValueError("a list of tags (strings)")


PUBLISH_RATE = "max-publish-bytes-per-second"
"""A user's or vhost's quota on bytes its connections send to the broker (server/quota.py)."""
DELIVER_RATE = "max-deliver-bytes-per-second"
"""A user's or vhost's quota on bytes the broker writes to its connections (server/quota.py)."""
USER_LIMITS = ("max-connections", "max-channels", PUBLISH_RATE, DELIVER_RATE)
VHOST_LIMITS = ("max-connections", "max-queues", PUBLISH_RATE, DELIVER_RATE)


def _limits(*names: str) -> Check:
    def check(value: Any) -> dict[str, int]:
        if value is None or value == []:  # RabbitMQ's export writes "limits": [] for none
            return {}
        expected = f"a mapping of {', '.join(names)} to integers (negative: no limit)"
        if not isinstance(value, dict):
            raise ValueError(expected)
        for key, limit in value.items():
            if key not in names or isinstance(limit, bool) or not isinstance(limit, int):
                raise ValueError(expected)
        return {str(k): int(v) for k, v in value.items()}

    return check


def _table(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError("a mapping of argument names to values")
    return dict(value)


def _exchange_type(value: Any) -> str:
    if isinstance(value, str) and (value in BUILTIN_EXCHANGE_TYPES or value.startswith("x-")):
        return value
    raise ValueError("one of direct, fanout, topic, headers (or a plugin's x- type)")


def _anything(value: Any) -> Any:
    return value


_OVERFLOW = _choice("drop-head", "reject-publish", "reject-publish-dlx")

QUEUE_ARGUMENTS: dict[str, Check] = {
    "x-message-ttl": _int(0),
    "x-expires": _int(1),
    "x-max-length": _int(0),
    "x-max-length-bytes": _int(0),
    "x-max-priority": _int(0, 255),
    "x-dead-letter-exchange": _str,
    "x-dead-letter-routing-key": _str,
    "x-overflow": _OVERFLOW,
    "x-single-active-consumer": _bool,
    "x-delivery-limit": _int(0),
    "x-consumer-timeout": _int(0),
    "x-queue-type": _choice("classic", "quorum", "stream"),
    "x-queue-mode": _choice("default", "lazy"),
    "x-queue-version": _int(1, 2),
    "x-queue-master-locator": _anything,
    "x-queue-leader-locator": _anything,
    "x-max-in-memory-length": _int(0),
    "x-max-in-memory-bytes": _int(0),
    "x-quorum-initial-group-size": _int(1),
    "x-dead-letter-strategy": _choice("at-most-once", "at-least-once"),
    "x-max-age": _str,
    "x-stream-max-segment-size-bytes": _int(1),
    "x-replicas": _int(1),
}

POLICY_KEYS: dict[str, Check] = {
    "message-ttl": _int(0),
    "expires": _int(1),
    "max-length": _int(0),
    "max-length-bytes": _int(0),
    "overflow": _OVERFLOW,
    "dead-letter-exchange": _str,
    "dead-letter-routing-key": _str,
    "delivery-limit": _int(0),
    "consumer-timeout": _int(0),
    "alternate-exchange": _str,
    "queue-mode": _choice("default", "lazy"),
    "max-priority": _int(0, 255),
    "replicas": _int(1),
}

_EXCHANGE_ARGUMENTS: dict[str, Check] = {"alternate-exchange": _str}
_X_MATCH = _choice("all", "any", "all-with-x", "any-with-x")

# field name -> (check, required); YAML keys may use - or _ (RabbitMQ writes apply-to).
_Fields = dict[str, tuple[Check, bool]]
_SECTIONS: dict[str, tuple[type, _Fields]] = {
    "vhosts": (
        VHostDef,
        {"name": (_name, True), "limits": (_limits(*VHOST_LIMITS), False)},
    ),
    "users": (
        UserDef,
        {
            "name": (_name, True),
            "password": (_str, False),
            "password_hash": (_str, False),
            "tags": (_tags, False),
            "limits": (_limits(*USER_LIMITS), False),
        },
    ),
    "permissions": (
        PermissionDef,
        {
            "user": (_name, True),
            "vhost": (_name, False),
            "configure": (_regex, False),
            "write": (_regex, False),
            "read": (_regex, False),
        },
    ),
    "topic_permissions": (
        TopicPermissionDef,
        {
            "user": (_name, True),
            "exchange": (_name, True),
            "vhost": (_name, False),
            "write": (_regex, False),
            "read": (_regex, False),
        },
    ),
    "exchanges": (
        ExchangeDef,
        {
            "name": (_name, True),
            "vhost": (_name, False),
            "type": (_exchange_type, False),
            "durable": (_bool, False),
            "auto_delete": (_bool, False),
            "internal": (_bool, False),
            "arguments": (_table, False),
        },
    ),
    "queues": (
        QueueDef,
        {
            "name": (_name, True),
            "vhost": (_name, False),
            "durable": (_bool, False),
            "auto_delete": (_bool, False),
            "arguments": (_table, False),
            "type": (_choice("classic"), False),
        },
    ),
    "bindings": (
        BindingDef,
        {
            "source": (_name, True),
            "destination": (_name, True),
            "vhost": (_name, False),
            "destination_type": (_choice("queue", "exchange"), False),
            "routing_key": (_str, False),
            "arguments": (_table, False),
        },
    ),
    "policies": (
        PolicyDef,
        {
            "name": (_name, True),
            "pattern": (_regex, True),
            "definition": (_table, True),
            "vhost": (_name, False),
            "priority": (_int(0), False),
            "apply_to": (_choice("queues", "exchanges", "all"), False),
        },
    ),
}

# Keys of RabbitMQ's export that carry nothing amqplite uses; accepted and ignored.
_IGNORED_TOP = {
    "rabbit_version",
    "rabbitmq_version",
    "product_name",
    "product_version",
    "parameters",
    "global_parameters",
}
_IGNORED_KEYS = {"hashing_algorithm", "limits", "metadata", "description", "tracing"}


class _Parser:
    """Walks a parsed document, building definitions and raising the first error found."""

    def __init__(self, src: Source) -> None:
        self.src = src

    def fail(self, path: Path_, expected: str, value: Any) -> ConfigError:
        return self.src.error(path, expected, value)

    def parse(self) -> Definitions:
        data = self.src.data
        if data is None:
            return Definitions()
        if not isinstance(data, dict):
            raise self.fail((), "a mapping with keys " + ", ".join(_SECTIONS), data)
        sections: dict[str, tuple[Any, ...]] = {}
        for key, value in data.items():
            if key in _IGNORED_TOP:
                continue
            if key not in _SECTIONS:
                raise self.fail((str(key),), "one of the sections " + ", ".join(_SECTIONS), key)
            sections[key] = self.section(key, value)
        defs = Definitions(**sections)
        self.cross_check(defs)
        return defs

    def section(self, name: str, items: Any) -> tuple[Any, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            raise self.fail((name,), f"a list of {name}", items)
        cls, fields = _SECTIONS[name]
        out = []
        for i, item in enumerate(items):
            path: Path_ = (name, i)
            if name == "vhosts" and isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise self.fail(path, f"a mapping ({', '.join(fields)})", item)
            out.append(self.entity(cls, fields, item, path))
        return tuple(out)

    def entity(self, cls: type, fields: _Fields, item: dict[Any, Any], path: Path_) -> Any:
        kwargs: dict[str, Any] = {}
        for key, value in item.items():
            here = (*path, str(key))
            field = str(key).replace("-", "_")
            if field in _IGNORED_KEYS and field not in fields:
                continue
            if field not in fields:
                raise self.fail(here, "one of the keys " + ", ".join(fields), key)
            check, _ = fields[field]
            try:
                kwargs[field] = check(value)
            except ValueError as exc:
                raise self.fail(here, str(exc), value) from None
        for field, (_, required) in fields.items():
            if required and field not in kwargs:
                raise self.src.error(path, f"a '{field}' key (it is required)")
        entity = cls(**kwargs)
        self.check_entity(entity, path)
        return entity

    def check_arguments(self, table: dict[str, Any], known: dict[str, Check], path: Path_) -> None:
        for key, value in table.items():
            here = (*path, key)
            check = known.get(key)
            if check is None:
                raise self.fail(here, "one of " + ", ".join(known), key)
            try:
                check(value)
            except ValueError as exc:
                raise self.fail(here, str(exc), value) from None

    def check_entity(self, entity: Any, path: Path_) -> None:
        if isinstance(entity, QueueDef):
            self.check_arguments(entity.arguments, QUEUE_ARGUMENTS, (*path, "arguments"))
        elif isinstance(entity, ExchangeDef):
            for key, value in entity.arguments.items():
                if key in _EXCHANGE_ARGUMENTS:
                    self.check_arguments({key: value}, _EXCHANGE_ARGUMENTS, (*path, "arguments"))
        elif isinstance(entity, PolicyDef):
            self.check_arguments(entity.definition, POLICY_KEYS, (*path, "definition"))
        elif isinstance(entity, BindingDef) and "x-match" in entity.arguments:
            try:
                _X_MATCH(entity.arguments["x-match"])
            except ValueError as exc:
                where = (*path, "arguments", "x-match")
                raise self.fail(where, str(exc), entity.arguments["x-match"]) from None
        elif isinstance(entity, UserDef) and entity.password is None and not entity.password_hash:
            raise self.src.error(path, "a 'password' or 'password_hash' key")

    def cross_check(self, defs: Definitions) -> None:
        """Names refer to things that exist: vhosts, and the two ends of each binding."""
        vhosts = {"/"} | {v.name for v in defs.vhosts}
        seen: dict[tuple[str, str, str], int] = {}
        sections = ("users", "permissions", "topic_permissions", "exchanges", "queues")
        for section in (*sections, "bindings", "policies"):
            for i, entity in enumerate(getattr(defs, section)):
                vhost = getattr(entity, "vhost", "/")
                if vhost not in vhosts:
                    raise self.fail(
                        (section, i, "vhost"), "a vhost listed under vhosts (or /)", vhost
                    )
                if section in ("exchanges", "queues", "policies", "users"):
                    ident = (section, vhost, entity.name)
                    if ident in seen:
                        raise self.fail(
                            (section, i, "name"),
                            f"a name not already used by {section}[{seen[ident]}]",
                            entity.name,
                        )
                    seen[ident] = i
        exchanges = {(e.vhost, e.name) for e in defs.exchanges}
        queues = {(q.vhost, q.name) for q in defs.queues}
        for i, b in enumerate(defs.bindings):
            if (b.vhost, b.source) not in exchanges and b.source not in BUILTIN_EXCHANGES:
                raise self.fail(
                    ("bindings", i, "source"),
                    f"an exchange defined under exchanges in vhost '{b.vhost}' (or amq.*)",
                    b.source,
                )
            known = queues if b.destination_type == "queue" else exchanges
            if (b.vhost, b.destination) not in known and b.destination not in BUILTIN_EXCHANGES:
                raise self.fail(
                    ("bindings", i, "destination"),
                    f"a {b.destination_type} defined under {b.destination_type}s "
                    f"in vhost '{b.vhost}'",
                    b.destination,
                )


def parse_definitions(src: Source) -> Definitions:
    """Definitions from a parsed YAML or JSON document; ConfigError on the first problem."""
    return _Parser(src).parse()


def load_definitions(path: str | Path) -> Definitions:
    """Read and validate a definitions file (YAML, or JSON, which is YAML too)."""
    return parse_definitions(read_yaml(path))
