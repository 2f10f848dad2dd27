"""The `amqplite` command: serve, ctl, definitions."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import attrs
import yaml

from amqplite import __version__
from amqplite.cli.logs import setup_logging
from amqplite.cli.startup import (
    OneLineParser,
    check_data_dir,
    env_port,
    fail,
    leaf_error,
    port_arg,
)
from amqplite.config.definitions import load_definitions, parse_definitions
from amqplite.config.loader import ConfigError, build_config, load_config
from amqplite.config.models import ClusterConfig, Config
from amqplite.config.source import ListenError, Source, read_yaml
from amqplite.server.plugin_loader import BadPlugin, UnknownPlugin, load_plugin

if TYPE_CHECKING:  # the management API client loads for the commands that use it, not for serve
    from amqplite.cli.api import ManagementClient

DEFAULT_CONFIG = Path("conf/amqplite.yaml")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; for `serve`, without the other commands' options (start-up)."""
    parser = OneLineParser(prog="amqplite", description="An AMQP 0-9-1 broker on trio.")
    parser.add_argument("--version", action="version", version=f"amqplite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument(
        "--config", help=f"YAML settings file (default: {DEFAULT_CONFIG} if present)"
    )
    serve.add_argument("--host", help="listen address (env AMQPLITE_HOST)")
    serve.add_argument("--port", type=port_arg, help="AMQP port (env AMQPLITE_PORT)")
    serve.add_argument("--data-dir", help="data directory (env AMQPLITE_DATA_DIR)")
    serve.add_argument(
        "--management-port",
        type=port_arg,
        help="HTTP management port, 0 disables (env AMQPLITE_MANAGEMENT_PORT)",
    )
    serve.add_argument(
        "--prometheus-port",
        type=port_arg,
        help="rabbitmq_* metrics port, no auth; 0 disables (default 15692 if free;"
        " env AMQPLITE_PROMETHEUS_PORT)",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error (env AMQPLITE_LOG_LEVEL)")
    serve.add_argument(
        "--definitions", help="definitions YAML applied at boot (env AMQPLITE_DEFINITIONS)"
    )
    serve.add_argument(
        "--node-name",
        help="this node's cluster name; enables cluster mode (env AMQPLITE_NODE_NAME)",
    )
    serve.add_argument(
        "--etcd",
        help="comma-separated etcd URLs; enables cluster mode (env AMQPLITE_ETCD)",
    )
    serve.add_argument(
        "--cluster-port", type=int, help="node-to-node link port; enables cluster mode"
    )
    serve.add_argument(
        "--queue-leaders",
        choices=("mirrored", "all"),
        help="which durable queues have one leader node (cluster.queue_leaders)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="run N node processes on this host as one cluster (an etcd of its own unless --etcd)",
    )

    defs = sub.add_parser("definitions", help="validate, export and import routing definitions")
    ctl_parser = sub.add_parser("ctl", help="inspect and operate a running broker")
    sub.add_parser("bench", help="benchmark suite (scripts/bench.py; amqplite bench --help)")
    if command == "serve":
        return parser
    from amqplite.cli import ctl

    ctl.add_arguments(ctl_parser)
    defs_sub = defs.add_subparsers(dest="action", required=True)
    validate = defs_sub.add_parser("validate", help="check definitions files, start nothing")
    validate.add_argument("files", nargs="+", metavar="FILE")
    for action, helptext in (
        ("export", "print a running broker's definitions"),
        ("import", "apply a definitions file to a running broker"),
    ):
        p = defs_sub.add_parser(action, help=helptext)
        p.add_argument("--url", help="management API (env AMQPLITE_MANAGEMENT_URL)")
        p.add_argument("--user", help="user (env AMQPLITE_USER, default guest)")
        p.add_argument("--password", help="password (env AMQPLITE_PASSWORD, default guest)")
        if action == "export":
            p.add_argument("--format", choices=("json", "yaml"), default="json")
            p.add_argument("--output", "-o", help="write to this file instead of stdout")
        else:
            p.add_argument("file", metavar="FILE", help="YAML or JSON definitions")
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """The file's settings, overridden by environment variables, overridden by flags."""
    path = getattr(args, "config", None)
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    config = load_config(path)
    host = getattr(args, "host", None) or os.environ.get("AMQPLITE_HOST")
    port = getattr(args, "port", None)
    if port is None:
        port = env_port("AMQPLITE_PORT")
    listener = attrs.evolve(
        config.listener,
        host=host or config.listener.host,
        port=port if port is not None else config.listener.port,
    )
    mgmt_port = getattr(args, "management_port", None)
    if mgmt_port is None:
        mgmt_port = env_port("AMQPLITE_MANAGEMENT_PORT")
    management = config.management
    if mgmt_port is not None:
        management = attrs.evolve(
            management, port=mgmt_port or management.port, enabled=mgmt_port != 0
        )
    prometheus_port = getattr(args, "prometheus_port", None)
    if prometheus_port is None:
        prometheus_port = env_port("AMQPLITE_PROMETHEUS_PORT")
    if prometheus_port is not None:
        management = attrs.evolve(management, prometheus_port=prometheus_port)
    log_level = (
        getattr(args, "log_level", None) or os.environ.get("AMQPLITE_LOG_LEVEL") or config.log_level
    ).lower()
    if log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(
            "--log-level",
            "log_level",
            "expected one of debug, info, warning, error",
            value=log_level,
        )
    return attrs.evolve(
        config,
        cluster=_cluster_overrides(args, config.cluster),
        listener=listener,
        management=management,
        data_dir=getattr(args, "data_dir", None)
        or os.environ.get("AMQPLITE_DATA_DIR")
        or config.data_dir,
        log_level=log_level,
        definitions=getattr(args, "definitions", None)
        or os.environ.get("AMQPLITE_DEFINITIONS")
        or config.definitions,
    )


def _cluster_overrides(args: argparse.Namespace, cluster: ClusterConfig) -> ClusterConfig:
    """--node-name, --etcd and --cluster-port (or their env) override the file and enable cluster mode."""
    leaders = getattr(args, "queue_leaders", None)
    if leaders is not None:
        cluster = attrs.evolve(cluster, queue_leaders=leaders)
    name = getattr(args, "node_name", None) or os.environ.get("AMQPLITE_NODE_NAME")
    etcd = getattr(args, "etcd", None) or os.environ.get("AMQPLITE_ETCD")
    port = getattr(args, "cluster_port", None)
    if name is None and etcd is None and port is None:
        return cluster
    flags = {}
    if name is not None:
        flags["node_name"] = name
    if etcd is not None:
        flags["etcd_endpoints"] = [url.strip() for url in etcd.split(",") if url.strip()]
    if port is not None:
        flags["listen"] = {"port": port}
    # validated as the file's `cluster:` section would be, so errors name the flag and key
    checked = build_config(Source("command line", {"cluster": flags})).cluster
    return attrs.evolve(
        cluster,
        enabled=True,
        node_name=checked.node_name if name is not None else cluster.node_name,
        etcd_endpoints=checked.etcd_endpoints if etcd is not None else cluster.etcd_endpoints,
        listen=attrs.evolve(cluster.listen, port=port) if port is not None else cluster.listen,
    )


def _check_startable(config: Config, args: argparse.Namespace) -> None:
    """Everything that can be refused before the node starts: definitions, plugins, cluster."""
    if config.cluster.enabled and not config.cluster.etcd_endpoints:
        raise ConfigError(
            "configuration", "cluster.etcd_endpoints", "expected at least one etcd URL", value=[]
        )
    if config.definitions:
        load_definitions(config.definitions)
    for i, name in enumerate(config.plugins):
        try:
            load_plugin(name)
        except (UnknownPlugin, BadPlugin) as exc:
            file, line = _config_place(args, ("plugins", i))
            raise ConfigError(file, f"plugins[{i}]", str(exc), line) from None


def _config_place(args: argparse.Namespace, key: tuple[str | int, ...]) -> tuple[str, int | None]:
    """The configuration file (and line of `key` in it) that settings were read from."""
    path = getattr(args, "config", None) or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is None:
        return "configuration", None
    return str(path), read_yaml(path).line_of(key)


def _data_dir_origin(args: argparse.Namespace) -> tuple[str, str, int | None]:
    """Where the data directory was set: (file or "command line"/"environment", key, line)."""
    if getattr(args, "data_dir", None):
        return "command line", "--data-dir", None
    if os.environ.get("AMQPLITE_DATA_DIR"):
        return "environment", "AMQPLITE_DATA_DIR", None
    path = getattr(args, "config", None) or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is None:
        return "default", "data_dir", None
    return str(path), "data_dir", read_yaml(path).line_of(("data_dir",))


def _serve(args: argparse.Namespace) -> int:
    # Start-up's imports make long-lived objects only: no cyclic collection until the node
    # collects once before recovery and freezes the survivors (server.node.run_node).
    gc.disable()
    try:
        return _serve_node(args)
    finally:
        gc.enable()


def _serve_node(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
        _check_startable(config, args)
        check_data_dir(config.data_dir, *_data_dir_origin(args))
    except ConfigError as exc:
        return fail(f"configuration error: {exc}", 2)
    workers = getattr(args, "workers", None)
    if workers is not None:
        from amqplite.cli.workers import run_workers

        gc.enable()  # the supervisor runs as long as its nodes
        return run_workers(args, config, workers)
    setup_logging(config)
    import trio

    from amqplite.server.node import run_node

    try:
        trio.run(run_node, config)
    except BaseException as exc:
        error = leaf_error(exc)
        if isinstance(error, ConfigError):
            return fail(f"configuration error: {error}", 2)
        if type(error).__module__.startswith("amqplite.cluster."):
            from amqplite.cluster.etcd_codec import EtcdError  # not imported unless clustered
            from amqplite.cluster.membership import ClusterError

            if isinstance(error, EtcdError | ClusterError):
                return fail(f"cluster: {error}", 1)
        if isinstance(error, ListenError):
            return fail(str(error), 1)
        if isinstance(error, OSError):
            return fail(f"cannot start: {error}", 1)
        raise
    return 0


def _client(args: argparse.Namespace) -> ManagementClient:
    """The management API client of --url, the environment, conf/amqplite.yaml or the default."""
    from amqplite.cli.api import DEFAULT_URL, client_from

    url, source = DEFAULT_URL, "default"
    if DEFAULT_CONFIG.exists():
        try:
            config = load_config(DEFAULT_CONFIG)
        except ConfigError:
            config = None
        if config is not None:
            host = config.management.host
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            url, source = f"http://{host}:{config.management.port}", str(DEFAULT_CONFIG)
    client = client_from(args, url, source)
    print(f"amqplite: management API {client.url} (from {client.source})", file=sys.stderr)
    return client


def _definitions(args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "validate":
        status = 0
        for file in args.files:
            try:
                defs = load_definitions(file)
            except ConfigError as exc:
                print(f"amqplite: {exc}", file=sys.stderr)
                status = 2
                continue
            sections = attrs.asdict(defs, recurse=False)
            counts = ", ".join(
                f"{len(items)} {name}"
                for name, items in sections.items()
                if items or name != "topic_permissions"  # rarely used: named only when present
            )
            out.write(f"{file}: valid ({counts})\n")
        return status
    client = _client(args)
    if args.action == "export":
        document = client.get("/api/definitions")
        if args.format == "yaml":
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(document, indent=2) + "\n"
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            out.write(text)
        return 0
    from amqplite.cli.api import ApiError

    src = read_yaml(args.file)
    parse_definitions(src)  # refuse a bad file here, with its line numbers
    try:
        answer = client.request("POST", "/api/definitions", src.data)
    except ApiError as exc:
        answer = exc.body
        if not (isinstance(answer, dict) and answer.get("conflicts")):
            raise
    conflicts = answer.get("conflicts", []) if isinstance(answer, dict) else []
    for conflict in conflicts:
        print(f"amqplite: conflict: {conflict}", file=sys.stderr)
    out.write(f"{args.file}: imported ({len(conflicts)} conflicts)\n")
    return 1 if conflicts else 0


def _ctl(args: argparse.Namespace, out: TextIO) -> int:
    from amqplite.cli import ctl

    client = _client(args)
    return ctl.run(args, client, out)


def _api_command(
    command: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace, out: TextIO
) -> int:
    """Run a command that may call the management API: an API error is one line, status 1."""
    from amqplite.cli.api import ApiError

    try:
        return command(args, out)
    except ApiError as exc:
        print(f"amqplite: {exc}", file=sys.stderr)
        return 1


def _bench(argv: list[str]) -> int:
    """`amqplite bench ...`: the benchmark suite of the source tree (scripts/bench.py)."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
    if not script.is_file():
        print(f"amqplite: bench needs the source tree ({script} not found)", file=sys.stderr)
        return 2
    bench = runpy.run_path(str(script), run_name="amqplite_bench")
    status: int = bench["main"](argv)
    return status


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the `amqplite` command; the exit status."""
    rest = sys.argv[1:] if argv is None else argv
    if rest[:1] != ["serve"]:
        gc.enable()  # off while `python -m amqplite` imports; serve keeps it off (_serve)
    if rest[:1] == ["bench"]:
        return _bench(rest[1:])
    args = _parser(rest[0] if rest else None).parse_args(argv)
    stdout = out or sys.stdout
    commands: dict[str, Callable[[], int]] = {
        "serve": lambda: _serve(args),
        "definitions": lambda: _api_command(_definitions, args, stdout),
        "ctl": lambda: _api_command(_ctl, args, stdout),
    }
    try:
        return commands[args.command]()
    except ConfigError as exc:
        print(f"amqplite: {exc}", file=sys.stderr)
        return 2
