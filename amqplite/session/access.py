"""Access checks beyond resource permissions: user_id, topic routing keys, loopback-only users."""

from __future__ import annotations

import ipaddress
import logging
from typing import Final

from amqplite.broker.auth import User, check_topic_access
from amqplite.broker.broker import Broker
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.protocol.properties import decode_properties

log = logging.getLogger("amqplite.session")

USER_ID_BIT: Final = 0x10
"""The user_id flag in the second byte of a content header's property flags."""

IMPERSONATOR: Final = "impersonator"


def check_user_id(user: User | None, properties_bin: bytes, class_id: int, method_id: int) -> None:
    """406 PRECONDITION_FAILED when a message's user_id is not the login (unless impersonator)."""
    if len(properties_bin) < 2 or not properties_bin[1] & USER_ID_BIT:
        return
    user_id = decode_properties(properties_bin).user_id
    name = user.name if user else ""
    if user_id == name or (user is not None and IMPERSONATOR in user.tags):
        return
    raise ChannelException(
        ReplyCode.PRECONDITION_FAILED,
        f"user_id property set to '{user_id}' but authenticated user was '{name}'",
        class_id,
        method_id,
    )


def check_topic(
    broker: Broker,
    user: User | None,
    vhost: str,
    exchange: str,
    routing_key: str,
    access: str,
    class_id: int,
    method_id: int,
) -> None:
    """403 ACCESS_REFUSED when a topic exchange's routing key is outside the user's patterns."""
    if not broker.topic_permissions:
        return
    name = user.name if user else ""
    permission = broker.topic_permission_of(name, vhost, exchange)
    if permission is None:
        return
    target = broker.vhosts[vhost].exchanges.get(exchange)
    if target is None or target.type_name != "topic":
        return
    check_topic_access(permission, access, routing_key, vhost, name, class_id, method_id)


def is_loopback(peer: str) -> bool:
    """True when the peer ("host:port") is a loopback address (127.0.0.0/8, ::1).

    A peer named without a port is an in-process stream (tests, a socketpair): local too.
    """
    if ":" not in peer:
        return peer != "?"  # "?": the address could not be read
    host = peer.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_loopback(user: User, peer: str, loopback_users: tuple[str, ...]) -> None:
    """403 ACCESS_REFUSED (logged) for a loopback-only user connecting from elsewhere."""
    if user.name in loopback_users and not is_loopback(peer):
        log.warning(
            "login refused from %s: user '%s' may only connect via localhost", peer, user.name
        )
        raise ConnectionException(
            ReplyCode.ACCESS_REFUSED,
            f"User '{user.name}' can only connect via localhost (loopback_users)",
        )
