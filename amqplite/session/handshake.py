"""The connection class before a connection opens: start, SASL login, tune and vhost open."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from amqplite import __version__
from amqplite.broker.auth import User, vhost_refused
from amqplite.broker.broker import Broker
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import FRAME_MIN_SIZE, ClassId, ReplyCode
from amqplite.protocol.errors import ConnectionException
from amqplite.protocol.methods import Method, build_method, spec
from amqplite.session.access import check_loopback
from amqplite.session.auth import MECHANISMS, parse_credentials
from amqplite.session.settings import SessionSettings

log = logging.getLogger("amqplite.session")

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}


@attrs.frozen
class Tuning:
    """What connection.tune-ok settled: the limits both sides use from now on."""

    frame_max: int
    channel_max: int
    heartbeat: int


def mechanisms(external_identity: str | None) -> tuple[str, ...]:
    """The SASL mechanisms offered: EXTERNAL too when a verified client certificate names a user."""
    return (*MECHANISMS, "EXTERNAL") if external_identity else MECHANISMS


def start_method(settings: SessionSettings, external_identity: str | None = None) -> Method:
    """connection.start: the server's identity, capabilities and SASL mechanisms."""
    method: Method = build_method(
        spec.Connection.Start,
        version_major=0,
        version_minor=9,
        server_properties={
            "product": settings.product,
            "version": __version__,
            "platform": "Python/trio",
            "copyright": "amqplite developers",
            "information": "https://pypi.org/project/amqplite/",
            "capabilities": dict(CAPABILITIES),
            "cluster_name": "amqplite",
        },
        mechanisms=" ".join(mechanisms(external_identity)),
        locales="en_US",
    )
    return method


def tune_method(settings: SessionSettings) -> Method:
    """connection.tune: the limits the server offers."""
    method: Method = build_method(
        spec.Connection.Tune,
        channel_max=settings.channel_max,
        frame_max=settings.frame_max,
        heartbeat=settings.heartbeat,
    )
    return method


def authenticate(
    broker: Broker,
    peer: str,
    method: Any,
    loopback_users: tuple[str, ...] = (),
    external_identity: str | None = None,
) -> User | ConnectionException:
    """The user a connection.start-ok logs in as, or the (logged) 403 that refuses it.

    An unknown mechanism raises 503 COMMAND_INVALID; a refused login is returned, not raised.
    A user in `loopback_users` is refused unless the peer is a loopback address. EXTERNAL logs
    in as the user named by the client certificate's CN (`external_identity`).
    """
    mechanism = method.mechanism or ""
    offered = mechanisms(external_identity)
    if mechanism not in offered:
        raise ConnectionException(
            ReplyCode.COMMAND_INVALID,
            f"unknown authentication mechanism '{mechanism}'; offered {' '.join(offered)}",
            ClassId.CONNECTION,
            11,
        )
    if mechanism == "EXTERNAL":
        credentials: tuple[str, str] | None = (external_identity or "", "")
        user = broker.users.get(external_identity or "")
    else:
        credentials = parse_credentials(mechanism, method.response or "")
        user = broker.authenticate(*credentials) if credentials else None
    if user is not None:
        try:
            check_loopback(user, peer, loopback_users)
        except ConnectionException as exc:
            return exc
        return user
    detail = f"user '{credentials[0] if credentials else '?'}'"
    log.warning("login refused from %s: %s (%s)", peer, detail, mechanism)
    return ConnectionException(
        ReplyCode.ACCESS_REFUSED,
        f"Login was refused using authentication mechanism {mechanism}. "
        "For details see the broker logfile.",
    )


def negotiate(settings: SessionSettings, method: Any) -> Tuning:
    """The limits of a connection.tune-ok, or 530 NOT_ALLOWED when frame_max is out of range."""
    frame_max = method.frame_max or settings.frame_max
    if frame_max < FRAME_MIN_SIZE:
        raise ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"frame_max={frame_max} < {FRAME_MIN_SIZE} min size",
            ClassId.CONNECTION,
            31,
        )
    if frame_max > settings.frame_max:
        raise ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"frame_max={frame_max} > {settings.frame_max} max size",
            ClassId.CONNECTION,
            31,
        )
    channel_max = method.channel_max or settings.channel_max
    return Tuning(
        frame_max=frame_max,
        channel_max=min(channel_max, settings.channel_max) or settings.channel_max,
        heartbeat=method.heartbeat or 0,
    )


def open_vhost(broker: Broker, peer: str, user: User | None, method: Any) -> VHost:
    """The vhost of a connection.open, or 403 when the user has no permissions on it."""
    vhost = broker.vhost(method.virtual_host or "/")
    name = user.name if user else ""
    if broker.permissions_of(name, vhost.name) is None:
        log.warning("vhost access refused from %s: user=%s vhost=%s", peer, name, vhost.name)
        raise vhost_refused(vhost.name, name)
    return vhost
