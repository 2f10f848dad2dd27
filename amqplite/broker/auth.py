"""Users' passwords and permissions: RabbitMQ's salted SHA-256 hashes and configure/write/read regexes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from functools import lru_cache

import attrs

from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


@attrs.frozen
class User:
    """A user that may log in, with its management tags."""

    name: str
    password: str  # "" when only the hash is known (imported definitions)
    tags: tuple[str, ...] = ()
    password_hash: str = ""  # RabbitMQ's rabbit_password_hashing_sha256 form (hash_password)


@attrs.frozen
class Permission:
    """What a user may do in one vhost: regexes matched against resource names, as RabbitMQ."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


FULL_ACCESS = Permission()


@attrs.frozen
class TopicPermission:
    """Regexes a topic exchange's routing keys must match: to publish (write), to bind (read).

    As RabbitMQ, ``{username}`` and ``{vhost}`` in a pattern stand for the user and the vhost.
    """

    exchange: str
    write: str = ".*"
    read: str = ".*"


def check_topic_access(
    permission: TopicPermission,
    access: str,
    routing_key: str,
    vhost: str,
    user: str,
    class_id: int = 0,
    method_id: int = 0,
) -> None:
    """Raise 403 ACCESS_REFUSED unless the routing key matches the write or read pattern."""
    pattern = getattr(permission, access).replace("{username}", user).replace("{vhost}", vhost)
    if permits(pattern, routing_key):
        return
    raise ChannelException(
        ReplyCode.ACCESS_REFUSED,
        f"{access} access to topic '{routing_key}' in exchange '{permission.exchange}' in vhost "
        f"'{vhost}' refused for user '{user}'",
        class_id,
        method_id,
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's password_hash: base64(salt + sha256(salt + utf8 password)), 4-byte salt.

    Without a salt, a random one is drawn (as RabbitMQ), so equal passwords give unequal hashes;
    compare a password with a hash through check_password.
    """
    raw = password.encode("utf-8")
    if salt is None:
        salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + raw).digest()).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    """True if the password matches a RabbitMQ-style SHA-256 hash."""
    try:
        raw = base64.b64decode(password_hash.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return False
    if len(raw) != 4 + 32:
        return False
    expected = hash_password(password, raw[:4])
    return hmac.compare_digest(expected, password_hash)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def permits(pattern: str, name: str) -> bool:
    """RabbitMQ's rule: an empty pattern allows nothing, otherwise an unanchored regex search."""
    if pattern == "":
        return False
    compiled = _compiled(pattern)
    return compiled is not None and compiled.search(name) is not None


def resource_name(kind: str, name: str) -> str:
    """The name permissions see: the default exchange is amq.default, as in RabbitMQ."""
    return "amq.default" if kind == "exchange" and name == "" else name


def check_access(
    permission: Permission | None,
    access: str,
    kind: str,
    name: str,
    vhost: str,
    user: str,
    class_id: int = 0,
    method_id: int = 0,
) -> None:
    """Raise 403 ACCESS_REFUSED unless `access` (configure/write/read) on the resource is allowed."""
    shown = resource_name(kind, name)
    if permission is not None and permits(getattr(permission, access), shown):
        return
    raise ChannelException(
        ReplyCode.ACCESS_REFUSED,
        f"access to {kind} '{shown}' in vhost '{vhost}' refused for user '{user}'",
        class_id,
        method_id,
    )


def vhost_refused(vhost: str, user: str) -> ConnectionException:
    """530 NOT_ALLOWED for connection.open to a vhost the user has no permissions on."""
    return ConnectionException(
        ReplyCode.NOT_ALLOWED,
        f"access to vhost '{vhost}' refused for user '{user}'",
        ClassId.CONNECTION,
        40,
    )
