"""Health checks (Kubernetes probes) and the read-only endpoints of features amqplite lacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.routing import ADMINISTRATOR, MANAGEMENT, PUBLIC, Router

OK = {"status": "ok"}

# RabbitMQ 3.10's feature flags, and whether amqplite behaves as each one describes.
FEATURE_FLAGS = (
    (
        "classic_mirrored_queue_version",
        False,
        "Support setting version for classic mirrored queues",
    ),
    ("drop_unroutable_metric", True, "Count unroutable publishes to be dropped in stats"),
    ("empty_basic_get_metric", True, "Count AMQP `basic.get` on empty queues in stats"),
    (
        "implicit_default_bindings",
        True,
        "Default bindings are now implicit, instead of being stored in the database",
    ),
    ("maintenance_mode_status", False, "Maintenance mode status"),
    ("quorum_queue", False, "Support queues of type `quorum`"),
    ("stream_queue", False, "Support queues of type `stream`"),
    ("user_limits", True, "Configure connection and channel limits for a user"),
    ("virtual_host_metadata", False, "Virtual host metadata (description, tags, etc)"),
)

# Lists that are always empty here: runtime parameters (no shovel or federation), operator
# policies. GET answers [] as RabbitMQ does when none are set.
EMPTY_LISTS = (
    "/api/parameters",
    "/api/parameters/{component}",
    "/api/parameters/{component}/{vhost}",
    "/api/global-parameters",
    "/api/operator-policies",
    "/api/operator-policies/{vhost}",
)


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/health/checks/virtual-hosts", health_ok, MANAGEMENT)
    router.add("GET", "/api/health/checks/node-is-quorum-critical", single_node, MANAGEMENT)
    router.add("GET", "/api/health/checks/node-is-mirror-sync-critical", single_node, MANAGEMENT)
    router.add("GET", "/api/health/checks/port-listener/{port}", port_listener, MANAGEMENT)
    router.add(
        "GET", "/api/health/checks/protocol-listener/{protocol}", protocol_listener, MANAGEMENT
    )
    router.add(
        "GET", "/api/health/checks/certificate-expiration/{within}/{unit}", health_ok, MANAGEMENT
    )
    router.add("GET", "/api/healthchecks/node", health_ok, MANAGEMENT)
    router.add("GET", "/api/healthchecks/node/{node}", node_health, MANAGEMENT)
    router.add("GET", "/api/extensions", empty_list, MANAGEMENT)
    router.add("GET", "/api/feature-flags", feature_flags, MANAGEMENT)
    router.add("GET", "/api/cluster-name", cluster_name, MANAGEMENT)
    router.add("GET", "/api/auth", auth, PUBLIC)
    for path in EMPTY_LISTS:
        router.add("GET", path, empty_list, MANAGEMENT)
    router.add("GET", "/api/parameters/{component}/{vhost}/{name}", not_found, MANAGEMENT)
    router.add("PUT", "/api/parameters/{component}/{vhost}/{name}", no_component, MANAGEMENT)
    router.add("GET", "/api/global-parameters/{name}", not_found, MANAGEMENT)
    for path, feature in UNSUPPORTED_WRITES:
        for method in ("PUT", "DELETE"):
            router.add(method, path, unsupported(feature), ADMINISTRATOR)


# Writes amqplite refuses with 405 and the reason: (path, what it does not implement)
UNSUPPORTED_WRITES = (
    ("/api/global-parameters/{name}", "global parameters"),
    ("/api/cluster-name", "renaming the cluster (its name is the node's)"),
    ("/api/operator-policies/{vhost}/{name}", "operator policies"),
)


def unsupported(feature: str) -> Callable[[Call], Response]:
    """A handler answering 405: amqplite does not implement `feature`."""

    def refuse(call: Call) -> Response:
        reason = f"amqplite does not implement {feature}"
        raise HttpError(405, reason, "method_not_allowed", (("allow", "GET, HEAD"),))

    return refuse


def health_ok(call: Call) -> Response:
    """200 {"status": "ok"}: every vhost runs, no certificates expire (no TLS listeners)."""
    return Response.json(OK)


def single_node(call: Call) -> Response:
    """amqplite is one node: no queue depends on it for a quorum or a mirror."""
    return Response.json({"status": "ok", "reason": "single node cluster"})


def node_health(call: Call) -> Response:
    """The (deprecated) node health check, for this node's name."""
    if call.params["node"] != call.app.node_name:
        raise HttpError(404, "Not Found", "Object Not Found")
    return Response.json(OK)


def _listeners(call: Call) -> list[tuple[str, int]]:
    """(protocol, port) of every listener, as RabbitMQ names the protocols."""
    config = call.app.node.config
    listeners = [("amqp", config.listener.port), ("http", config.management.port)]
    if call.app.prometheus_port is not None:
        listeners.append(("http/prometheus", call.app.prometheus_port))
    return listeners


def port_listener(call: Call) -> Response:
    """200 when a listener is on the port, else 503 with the ports that are."""
    try:
        port = int(call.params["port"])
    except ValueError:
        raise HttpError(400, f"'{call.params['port']}' is not a port number") from None
    ports = [p for _, p in _listeners(call)]
    if port in ports:
        return Response.json({"status": "ok", "port": port})
    failed = {"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}
    return Response.json(failed, 503)


def protocol_listener(call: Call) -> Response:
    """200 when a listener speaks the protocol (amqp, http, http/prometheus), else 503."""
    protocol = call.params["protocol"].lower()
    protocols = [name for name, _ in _listeners(call)]
    if protocol in protocols:
        return Response.json({"status": "ok", "protocol": protocol})
    failed = {
        "status": "failed",
        "reason": "No active listener",
        "missing": protocol,
        "protocols": protocols,
    }
    return Response.json(failed, 503)


def empty_list(call: Call) -> Response:
    """[]: nothing of this kind exists in amqplite."""
    if "vhost" in call.params:
        call.vhost()  # 404 for a vhost that does not exist
    return Response.json([])


def not_found(call: Call) -> Response:
    """404 as RabbitMQ answers for a parameter that is not set."""
    raise HttpError(404, "Not Found", "Object Not Found")


def no_component(call: Call) -> Response:
    """400 as RabbitMQ answers for a runtime parameter of a plugin that is not there."""
    component = call.params["component"]
    raise HttpError(400, f"Validation failed\n\ncomponent {component} not found\n", "bad_request")


def feature_flags(call: Call) -> Response:
    """RabbitMQ 3.10's feature flags: enabled where amqplite behaves as the flag describes."""
    flags: list[dict[str, Any]] = [
        {
            "name": name,
            "desc": desc,
            "doc_url": "",
            "state": "enabled" if enabled else "disabled",
            "stability": "stable",
            "provided_by": "amqplite",
        }
        for name, enabled, desc in FEATURE_FLAGS
    ]
    return Response.json(flags)


def cluster_name(call: Call) -> Response:
    """The cluster's name (the node's name: one node)."""
    return Response.json({"name": call.app.node_name})


def auth(call: Call) -> Response:
    """How the management UI logs in: basic auth, no OAuth 2 (UAA)."""
    return Response.json({"enable_uaa": False, "uaa_client_id": "", "uaa_location": ""})
