"""/api/user-limits, /api/vhost-limits and /api/topic-permissions, as RabbitMQ has them (durable)."""

from __future__ import annotations

import re
from typing import Any

from amqplite.broker.auth import TopicPermission
from amqplite.config.definitions import USER_LIMITS, VHOST_LIMITS
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.routing import ADMINISTRATOR, MANAGEMENT, Router

NOT_FOUND = ("Not Found", "Object Not Found")


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/user-limits", user_limits, ADMINISTRATOR)
    router.add("GET", "/api/user-limits/{user}", user_limits, ADMINISTRATOR)
    router.add("PUT", "/api/user-limits/{user}/{name}", put_user_limit, ADMINISTRATOR)
    router.add("DELETE", "/api/user-limits/{user}/{name}", delete_user_limit, ADMINISTRATOR)
    router.add("GET", "/api/vhost-limits", vhost_limits, MANAGEMENT)
    router.add("GET", "/api/vhost-limits/{vhost}", vhost_limits, MANAGEMENT)
    router.add("PUT", "/api/vhost-limits/{vhost}/{name}", put_vhost_limit, ADMINISTRATOR)
    router.add("DELETE", "/api/vhost-limits/{vhost}/{name}", delete_vhost_limit, ADMINISTRATOR)
    router.add("GET", "/api/topic-permissions", topic_permissions, ADMINISTRATOR)
    router.add("GET", "/api/topic-permissions/{vhost}/{user}", topic_permissions, ADMINISTRATOR)
    router.add("PUT", "/api/topic-permissions/{vhost}/{user}", put_topic_permission, ADMINISTRATOR)
    router.add(
        "DELETE", "/api/topic-permissions/{vhost}/{user}", delete_topic_permission, ADMINISTRATOR
    )
    router.add("GET", "/api/vhosts/{vhost}/topic-permissions", topic_permissions, ADMINISTRATOR)
    router.add("GET", "/api/users/{user}/topic-permissions", topic_permissions, ADMINISTRATOR)


# -- limits ------------------------------------------------------------------------------------


def user_limits(call: Call) -> Response:
    """[{"user": name, "value": {limit: value}}] for every user with limits (or one user)."""
    wanted = call.params.get("user")
    if wanted is not None and wanted not in call.broker.users:
        raise HttpError(404, *NOT_FOUND)
    return Response.json(
        [
            {"user": name, "value": dict(limits)}
            for name, limits in sorted(call.broker.user_limits.items())
            if limits and (wanted is None or name == wanted)
        ]
    )


def vhost_limits(call: Call) -> Response:
    """[{"vhost": name, "value": {limit: value}}] for every vhost with limits (or one vhost)."""
    wanted = call.vhost().name if "vhost" in call.params else None
    return Response.json(
        [
            {"vhost": name, "value": dict(limits)}
            for name, limits in sorted(call.broker.vhost_limits.items())
            if limits and (wanted is None or name == wanted)
        ]
    )


def _limit_value(call: Call, known: tuple[str, ...]) -> tuple[str, int]:
    name = call.params["name"]
    if name not in known:
        raise HttpError(400, f"unknown limit '{name}': one of {', '.join(known)}")
    value = call.json_object(empty_ok=False).get("value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, "'value' (an integer; negative: no limit) is required")
    return name, value


def put_user_limit(call: Call) -> Response:
    """Set one limit of a user (max-connections, max-channels, the byte-rate quotas)."""
    user = call.params["user"]
    if user not in call.broker.users:
        raise HttpError(404, *NOT_FOUND)
    name, value = _limit_value(call, USER_LIMITS)
    call.broker.set_limit("user", user, name, value)
    return Response.empty()


def delete_user_limit(call: Call) -> Response:
    """Remove one limit of a user."""
    user, name = call.params["user"], call.params["name"]
    if name not in call.broker.user_limits.get(user, {}):
        raise HttpError(404, *NOT_FOUND)
    call.broker.clear_limit("user", user, name)
    return Response.empty()


def put_vhost_limit(call: Call) -> Response:
    """Set one limit of a vhost (max-connections, max-queues, the byte-rate quotas)."""
    vhost = call.vhost()
    name, value = _limit_value(call, VHOST_LIMITS)
    call.broker.set_limit("vhost", vhost.name, name, value)
    return Response.empty()


def delete_vhost_limit(call: Call) -> Response:
    """Remove one limit of a vhost."""
    vhost = call.vhost()
    name = call.params["name"]
    if name not in call.broker.vhost_limits.get(vhost.name, {}):
        raise HttpError(404, *NOT_FOUND)
    call.broker.clear_limit("vhost", vhost.name, name)
    return Response.empty()


# -- topic permissions -------------------------------------------------------------------------


def topic_permissions(call: Call) -> Response:
    """RabbitMQ's topic permission objects, all or of one user and/or vhost."""
    user, vhost = call.params.get("user"), call.params.get("vhost")
    if vhost is not None:
        call.vhost()
    if user is not None and user not in call.broker.users:
        raise HttpError(404, *NOT_FOUND)
    out: list[dict[str, Any]] = []
    for (user_name, vhost_name), by_exchange in sorted(call.broker.topic_permissions.items()):
        if (user is None or user == user_name) and (vhost is None or vhost == vhost_name):
            out.extend(
                {
                    "user": user_name,
                    "vhost": vhost_name,
                    "exchange": p.exchange,
                    "write": p.write,
                    "read": p.read,
                }
                for _, p in sorted(by_exchange.items())
            )
    if user is not None and vhost is not None and not out:
        raise HttpError(404, *NOT_FOUND)
    return Response.json(out)


def put_topic_permission(call: Call) -> Response:
    """Set a user's write/read routing-key regexes on one exchange (201 new, 204 replaced)."""
    vhost = call.vhost()
    user = call.params["user"]
    if user not in call.broker.users:
        raise HttpError(404, *NOT_FOUND)
    body = call.json_object(empty_ok=False)
    exchange = body.get("exchange")
    if not isinstance(exchange, str) or not exchange:
        raise HttpError(400, "'exchange' (a topic exchange's name) is required")
    regexes: dict[str, str] = {}
    for key in ("write", "read"):
        value = body.get(key, ".*")
        if not isinstance(value, str):
            raise HttpError(400, f"'{key}' must be a regex string")
        try:
            re.compile(value)
        except re.error as exc:
            raise HttpError(400, f"'{key}' is not a regular expression: {exc}") from None
        regexes[key] = value
    existed = call.broker.topic_permission_of(user, vhost.name, exchange) is not None
    call.broker.set_topic_permission(user, vhost.name, TopicPermission(exchange, **regexes))
    return Response.empty(204 if existed else 201)


def delete_topic_permission(call: Call) -> Response:
    """Remove a user's topic permissions on a vhost (all, or `?exchange=` one)."""
    vhost = call.vhost()
    user = call.params["user"]
    by_exchange = call.broker.topic_permissions.get((user, vhost.name), {})
    only = call.query.get("exchange")
    names = [only] if only else list(by_exchange)
    if not names or any(name not in by_exchange for name in names):
        raise HttpError(404, *NOT_FOUND)
    for name in names:
        call.broker.clear_topic_permission(user, vhost.name, name)
    return Response.empty()
