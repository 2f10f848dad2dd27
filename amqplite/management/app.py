"""The management application: dispatch, basic auth, tags and vhost permissions, error mapping."""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from amqplite.broker.auth import FULL_ACCESS, Permission, User
from amqplite.broker.broker import Broker
from amqplite.broker.queue import Queue
from amqplite.broker.vhost import VHost
from amqplite.management.http import HttpError, Request, Response
from amqplite.management.json_values import BodyValueError
from amqplite.management.listing import select_columns
from amqplite.management.metrics import QueueMetricLines
from amqplite.management.queue_rows import QueueJsonCache, sample_all
from amqplite.management.rates import RateTracker
from amqplite.management.routing import (
    LEVEL_TAGS,
    MONITORING_TAGS,
    PUBLIC,
    Router,
    parse_query,
    split_path,
)
from amqplite.management.sockets import socket_counters
from amqplite.management.sqs import SqsMessaging
from amqplite.management.views import NodeView
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import AMQPError

__all__ = ["Call", "ManagementApp", "amqp_error", "check_content_type", "parse_json_body"]

MAX_JSON_DEPTH = 32
"""Nesting of arrays and objects a request body may have (definitions need about 5)."""

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_content_type(request: Request) -> None:
    """415 for a state-changing request whose body is not declared application/json.

    A cross-site HTML form can POST text/plain, urlencoded or multipart bodies without a CORS
    preflight; requiring JSON keeps a logged-in browser from being used to change the broker.
    """
    if request.method not in STATE_CHANGING:
        return
    declared = request.headers.get("content-type")
    if declared is None and not request.body:
        return  # e.g. DELETE /api/queues/%2F/q: nothing a form could have sent
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HttpError(
            415,
            f"{request.method} requests need content-type application/json "
            f"(got '{declared or 'none'}')",
        )


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iterative, no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_json_body(body: bytes) -> Any:
    """The parsed body, or 400 with the reason: malformed, or nested over MAX_JSON_DEPTH."""
    too_deep = HttpError(400, f"JSON body nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        value = json.loads(body)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"malformed JSON body: {exc}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise too_deep
    return value


@attrs.frozen
class Call:
    """One authorised request as handlers see it: path parameters, query, user, the app."""

    app: ManagementApp
    request: Request
    params: Mapping[str, str]
    query: Mapping[str, str]
    user: User | None

    @property
    def broker(self) -> Broker:
        """The broker core."""
        return self.app.broker

    def json(self, default: Any = None) -> Any:
        """The request body as JSON (400 if malformed); `default` for an empty body."""
        body = self.request.body
        if not body.strip():
            if default is None:
                raise HttpError(400, "a JSON body is required")
            return default
        return parse_json_body(body)

    def json_object(self, empty_ok: bool = True) -> dict[str, Any]:
        """The request body as a JSON object (400 otherwise)."""
        value = self.json({} if empty_ok else None)
        if not isinstance(value, dict):
            raise HttpError(400, "the JSON body must be an object")
        return value

    def vhost(self, kind: str | None = None, name: str = "") -> VHost:
        """The vhost named by the path (404 if missing), checking the user's access to it."""
        vhost_name = self.params["vhost"]
        vhost = self.broker.vhosts.get(vhost_name)
        if vhost is None:
            raise HttpError(404, f"vhost '{vhost_name}' not found", "Object Not Found")
        self.app.check_access(self.user, vhost_name, kind, name)
        return vhost

    def queue(self, vhost: VHost) -> Queue:
        """The queue named by the path (404 if missing)."""
        queue = vhost.queues.get(self.params["name"])
        if queue is None:
            raise HttpError(404, "Not Found", "Object Not Found")
        return queue

    def one(self, item: dict[str, Any]) -> Response:
        """A single object as JSON, reduced to `columns=` if given."""
        columns = [c for c in self.query.get("columns", "").split(",") if c]
        return Response.json(select_columns(item, columns) if columns else item)

    def flag(self, name: str) -> bool:
        """A boolean query parameter (`if-empty=true`)."""
        return self.query.get(name, "false").lower() in ("true", "1", "yes")

    @property
    def username(self) -> str:
        """The authenticated user's name ("" for public routes)."""
        return self.user.name if self.user is not None else ""


def amqp_error(exc: AMQPError) -> HttpError:
    """An AMQP error from the core as the HTTP status RabbitMQ's API gives for it."""
    code = exc.reply_code
    if code == ReplyCode.NOT_FOUND:
        return HttpError(404, exc.reply_text, "Object Not Found")
    if code == ReplyCode.ACCESS_REFUSED:
        return HttpError(403, exc.reply_text, "access_refused")
    return HttpError(400, exc.reply_text, "bad_request")


class ManagementApp:
    """Request -> response over the node: every handler is a plain function of the request."""

    def __init__(
        self,
        node: NodeView,
        router: Router[Call],
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        node_name: str | None = None,
        store: object | None = None,
    ) -> None:
        self.node = node
        self.store = store  # the durable store, read by /metrics (journal bytes, fsync latency)
        self.broker = node.broker
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = clock()
        self.started_wall = wall_clock()
        cluster = node.config.cluster
        default_name = cluster.node_name if cluster.enabled else f"amqplite@{socket.gethostname()}"
        self.node_name = node_name or default_name
        self.rates = RateTracker()
        self.sqs = SqsMessaging(self.broker)
        self.queue_json = QueueJsonCache()
        self.queue_metrics = QueueMetricLines()
        self.connected_at: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        self.router = router
        self.prometheus_port: int | None = None  # where rabbitmq_* metrics are served, if anywhere

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; errors become JSON 4xx/5xx responses."""
        try:
            check_content_type(request)
            route, params = self.router.match(request.method, split_path(request.path))
            user = self.authenticate(request, route.level)
            call = Call(self, request, params, parse_query(request.query), user)
            commits = self.broker.commits
            outer = commits.watch()
            try:
                response = route.handler(call)
            finally:
                mark = commits.watched(outer)
            if mark is not None:  # the answer waits until what the request wrote is on disk
                response = attrs.evolve(response, durable_mark=mark)
        except HttpError as exc:
            response = exc.response()
        except AMQPError as exc:
            response = amqp_error(exc).response()
        except BodyValueError as exc:
            response = HttpError(400, str(exc), "bad_request").response()
        if request.method == "HEAD":
            return attrs.evolve(response, body=b"")
        return response

    def authenticate(self, request: Request, level: str) -> User | None:
        """The user of the request's basic auth; 401 without valid credentials, 403 without the tag."""
        if level == PUBLIC:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        challenge: tuple[tuple[str, str], ...] = (
            ("www-authenticate", 'Basic realm="amqplite management"'),
        )
        if request.headers.get("x-requested-with", "").lower() == "xmlhttprequest":
            challenge = ()  # the web UI asks itself: no browser login prompt over it
        if scheme.lower() != "basic" or not encoded:
            raise HttpError(401, "credentials required", "not_authorised", challenge)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(401, "malformed basic auth credentials", headers=challenge) from None
        name, sep, password = decoded.partition(":")
        user = self.broker.authenticate(name, password) if sep else None
        if user is None:
            raise HttpError(401, "Login failed", "not_authorised", challenge)
        tags = LEVEL_TAGS.get(level)
        if tags is not None and not tags.intersection(user.tags):
            raise HttpError(403, f"user '{name}' lacks a tag required here ({level})")
        return user

    # -- permissions -------------------------------------------------------------------------

    def permission_of(self, user: User | None, vhost: str) -> Permission | None:
        """The user's permission on the vhost (None: none); full access for public routes."""
        if user is None:
            return FULL_ACCESS
        return self.broker.permissions_of(user.name, vhost)

    def can_see(self, user: User | None, vhost: str) -> bool:
        """True when the user may list the vhost's objects (monitoring sees every vhost)."""
        if user is None or MONITORING_TAGS.intersection(user.tags):
            return True
        return self.permission_of(user, vhost) is not None

    def check_access(self, user: User | None, vhost: str, kind: str | None, name: str) -> None:
        """403 unless the user has access to the vhost (and the `kind` regex matches `name`)."""
        if user is None:
            return
        permission = self.permission_of(user, vhost)
        if permission is None:
            if kind is None and MONITORING_TAGS.intersection(user.tags):
                return
            raise HttpError(403, f"access to vhost '{vhost}' refused for user '{user.name}'")
        if kind is None:
            return
        regex = getattr(permission, kind, ".*")
        if not regex or re.fullmatch(regex, name) is None:
            raise HttpError(
                403,
                f"{kind} access to '{name}' in vhost '{vhost}' refused for user '{user.name}'",
            )

    def visible_vhosts(self, user: User | None) -> Iterable[VHost]:
        """The vhosts the user may list."""
        return [v for v in self.broker.vhosts.values() if self.can_see(user, v.name)]

    # -- periodic work -----------------------------------------------------------------------

    def sample(self) -> None:
        """Take a rate sample of every queue, connection and the totals (every few seconds), so a
        one-shot reader such as `amqplite ctl` sees rates."""
        now = self.clock()
        sample_all(self, now)
        for conn in list(self.node.connections):
            counters = socket_counters(conn.stream)
            if counters is not None:  # the same series render_connection observes
                self.rates.observe(conn.session, now, (counters.recv_oct, counters.send_oct))
