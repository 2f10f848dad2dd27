"""/api/users, /api/permissions, /api/policies, /api/definitions (the other helpers' core APIs)."""

from __future__ import annotations

from typing import Any

from amqplite.broker.auth import Permission, User
from amqplite.broker.policy import Policy
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import body_int, jsonable
from amqplite.management.listing import render_list
from amqplite.management.routing import ADMINISTRATOR, MANAGEMENT, POLICYMAKER, Router

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/users", list_users, ADMINISTRATOR)
    router.add("GET", "/api/users/{user}", show_user, ADMINISTRATOR)
    router.add("PUT", "/api/users/{user}", put_user, ADMINISTRATOR)
    router.add("DELETE", "/api/users/{user}", delete_user, ADMINISTRATOR)
    router.add("GET", "/api/users/{user}/permissions", user_permissions, ADMINISTRATOR)
    router.add("GET", "/api/permissions", list_permissions, ADMINISTRATOR)
    router.add("GET", "/api/vhosts/{vhost}/permissions", vhost_permissions, ADMINISTRATOR)
    router.add("GET", "/api/permissions/{vhost}/{user}", show_permission, ADMINISTRATOR)
    router.add("PUT", "/api/permissions/{vhost}/{user}", put_permission, ADMINISTRATOR)
    router.add("DELETE", "/api/permissions/{vhost}/{user}", delete_permission, ADMINISTRATOR)
    router.add("GET", "/api/policies", list_policies, MANAGEMENT)
    router.add("GET", "/api/policies/{vhost}", list_policies, MANAGEMENT)
    router.add("GET", "/api/policies/{vhost}/{name}", show_policy, MANAGEMENT)
    router.add("PUT", "/api/policies/{vhost}/{name}", put_policy, POLICYMAKER)
    router.add("DELETE", "/api/policies/{vhost}/{name}", delete_policy, POLICYMAKER)
    router.add("GET", "/api/definitions", get_definitions, ADMINISTRATOR)
    router.add("POST", "/api/definitions", post_definitions, ADMINISTRATOR)


# -- users -------------------------------------------------------------------------------------


def render_user(user: User, limits: dict[str, int] | None = None) -> dict[str, Any]:
    """A user as RabbitMQ's JSON object (the hash, never the password)."""
    return {
        "name": user.name,
        "password_hash": getattr(user, "password_hash", ""),
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": list(user.tags),
        "limits": dict(limits or {}),
    }


def _user(call: Call) -> Any:
    user = call.broker.users.get(call.params["user"])
    if user is None:
        raise HttpError(404, "Not Found", "Object Not Found")
    return user


def list_users(call: Call) -> Response:
    """Every user."""
    users = sorted(call.broker.users.values(), key=lambda u: u.name)
    limits = call.broker.user_limits
    return Response.json(
        render_list(
            users, lambda u: u.name, lambda u: render_user(u, limits.get(u.name)), call.query
        )
    )


def show_user(call: Call) -> Response:
    """One user."""
    user = _user(call)
    return call.one(render_user(user, call.broker.user_limits.get(user.name)))


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise HttpError(400, "'tags' must be a comma-separated string or a list of strings")


def put_user(call: Call) -> Response:
    """Create (201) or replace (204) a user from `password` or `password_hash`, with `tags`."""
    name = call.params["user"]
    if not name:
        raise HttpError(400, "a user name is required")
    body = call.json_object(empty_ok=False)
    tags = _tags(body.get("tags"))
    password = body.get("password")
    password_hash = body.get("password_hash")
    existed = name in call.broker.users
    if password is not None:
        if not isinstance(password, str):
            raise HttpError(400, "'password' must be a string")
        call.broker.add_user(name, password, tags)
    elif password_hash is not None:
        if not isinstance(password_hash, str):
            raise HttpError(400, "'password_hash' must be a string")
        call.broker.add_user(name, "", tags, password_hash=password_hash)
    elif existed:  # RabbitMQ: a PUT without a password keeps the old one (tags change)
        old = call.broker.users[name]
        call.broker.add_user(
            name, old.password, tags, password_hash=getattr(old, "password_hash", "")
        )
    else:
        raise HttpError(400, "'password' or 'password_hash' is required")
    return Response.empty(204 if existed else 201)


def delete_user(call: Call) -> Response:
    """Delete a user (and its permissions)."""
    _user(call)
    call.broker.delete_user(call.params["user"])
    return Response.empty()


# -- permissions -------------------------------------------------------------------------------


def _render_permission(user: str, vhost: str, permission: Permission) -> dict[str, Any]:
    return {
        "user": user,
        "vhost": vhost,
        "configure": permission.configure,
        "write": permission.write,
        "read": permission.read,
    }


def _permissions(
    call: Call, user: str | None = None, vhost: str | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for user_name in sorted(call.broker.users):
        if user is not None and user_name != user:
            continue
        for vhost_name in sorted(call.broker.vhosts):
            if vhost is not None and vhost_name != vhost:
                continue
            permission = call.broker.permissions_of(user_name, vhost_name)
            if permission is not None:
                out.append(_render_permission(user_name, vhost_name, permission))
    return out


def list_permissions(call: Call) -> Response:
    """Every permission."""
    return Response.json(_permissions(call))


def user_permissions(call: Call) -> Response:
    """The permissions of one user."""
    _user(call)
    return Response.json(_permissions(call, user=call.params["user"]))


def vhost_permissions(call: Call) -> Response:
    """The permissions on one vhost."""
    call.vhost()
    return Response.json(_permissions(call, vhost=call.params["vhost"]))


def show_permission(call: Call) -> Response:
    """One user's permission on one vhost."""
    vhost = call.vhost()
    _user(call)
    permission = call.broker.permissions_of(call.params["user"], vhost.name)
    if permission is None:
        raise HttpError(404, "Not Found", "Object Not Found")
    return Response.json(_render_permission(call.params["user"], vhost.name, permission))


def put_permission(call: Call) -> Response:
    """Set a user's configure/write/read regexes on a vhost (201 new, 204 replaced)."""

    vhost = call.vhost()
    _user(call)
    body = call.json_object(empty_ok=False)
    regexes: dict[str, str] = {}
    for key in ("configure", "write", "read"):
        value = body.get(key)
        if not isinstance(value, str):
            raise HttpError(400, f"'{key}' (a regex string) is required")
        regexes[key] = value
    user = call.params["user"]
    existed = call.broker.permissions_of(user, vhost.name) is not None
    call.broker.set_permissions(user, vhost.name, Permission(**regexes))
    return Response.empty(204 if existed else 201)


def delete_permission(call: Call) -> Response:
    """Take away a user's access to a vhost."""
    vhost = call.vhost()
    _user(call)
    if call.broker.permissions_of(call.params["user"], vhost.name) is None:
        raise HttpError(404, "Not Found", "Object Not Found")
    call.broker.clear_permissions(call.params["user"], vhost.name)
    return Response.empty()


# -- policies ----------------------------------------------------------------------------------


def render_policy(policy: Policy) -> dict[str, Any]:
    """A policy as RabbitMQ's JSON object."""
    return {
        "vhost": policy.vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "definition": jsonable(policy.definition),
        "priority": policy.priority,
    }


def list_policies(call: Call) -> Response:
    """Policies of the visible vhosts, or of one vhost."""
    if "vhost" in call.params:
        policies = call.broker.list_policies(call.vhost().name)
    else:
        visible = {v.name for v in call.app.visible_vhosts(call.user)}
        policies = [p for p in call.broker.list_policies() if p.vhost in visible]
    return Response.json(render_list(policies, lambda p: p.name, render_policy, call.query))


def _policy(call: Call) -> Any:
    vhost = call.vhost()
    for policy in call.broker.list_policies(vhost.name):
        if policy.name == call.params["name"]:
            return policy
    raise HttpError(404, "Not Found", "Object Not Found")


def show_policy(call: Call) -> Response:
    """One policy."""
    return call.one(render_policy(_policy(call)))


def put_policy(call: Call) -> Response:
    """Create (201) or replace (204) a policy: pattern, definition, priority, apply-to."""

    vhost = call.vhost()
    name = call.params["name"]
    body = call.json_object(empty_ok=False)
    pattern = body.get("pattern")
    definition = body.get("definition")
    priority = body_int(body, "priority", 0)
    apply_to = body.get("apply-to", "all")
    if not isinstance(pattern, str):
        raise HttpError(400, "'pattern' (a regex string) is required")
    if not isinstance(definition, dict) or not definition:
        raise HttpError(400, "'definition' (a non-empty object) is required")
    if not isinstance(apply_to, str):
        raise HttpError(400, "'apply-to' must be queues, exchanges or all")
    existed = any(p.name == name for p in call.broker.list_policies(vhost.name))
    try:
        call.broker.set_policy(Policy(vhost.name, name, pattern, definition, priority, apply_to))
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return Response.empty(204 if existed else 201)


def delete_policy(call: Call) -> Response:
    """Delete a policy."""
    policy = _policy(call)
    call.broker.clear_policy(policy.vhost, policy.name)
    return Response.empty()


# -- definitions -------------------------------------------------------------------------------


def get_definitions(call: Call) -> Response:
    """Export users, vhosts, permissions, policies, queues, exchanges and bindings."""
    from amqplite.broker.definitions import export_definitions

    return Response.json(jsonable(export_definitions(call.broker)))


def post_definitions(call: Call) -> Response:
    """Import a definitions document: 204, or 400 listing the conflicts (nothing else changed)."""
    from amqplite.broker.definitions import import_definitions
    from amqplite.config.loader import ConfigError

    document = call.json_object(empty_ok=False)
    try:
        conflicts = import_definitions(call.broker, document)
    except ConfigError as exc:
        raise HttpError(400, str(exc)) from None
    if conflicts:
        raise HttpError(
            400, f"{len(conflicts)} conflict(s): {conflicts[0]}", extra={"conflicts": conflicts}
        )
    return Response.empty()
