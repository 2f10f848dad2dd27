"""The `amqplite` command: serve (more subcommands come with later issues)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import attrs
import trio

from amqplite import __version__
from amqplite.config.loader import ConfigError, load_config
from amqplite.config.models import Config

DEFAULT_CONFIG = Path("conf/amqplite.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqplite", description="An AMQP 0-9-1 broker on trio.")
    parser.add_argument("--version", action="version", version=f"amqplite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument(
        "--config", help=f"YAML settings file (default: {DEFAULT_CONFIG} if present)"
    )
    serve.add_argument("--host", help="listen address (env AMQPLITE_HOST)")
    serve.add_argument("--port", type=int, help="AMQP port (env AMQPLITE_PORT)")
    serve.add_argument("--data-dir", help="data directory (env AMQPLITE_DATA_DIR)")
    serve.add_argument(
        "--management-port",
        type=int,
        help="HTTP management port, 0 disables (env AMQPLITE_MANAGEMENT_PORT)",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error (env AMQPLITE_LOG_LEVEL)")
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """The file's settings, overridden by environment variables, overridden by flags."""
    path = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    config = load_config(path)
    host = args.host or os.environ.get("AMQPLITE_HOST")
    port = args.port or (
        int(os.environ["AMQPLITE_PORT"]) if os.environ.get("AMQPLITE_PORT") else None
    )
    listener = attrs.evolve(
        config.listener,
        host=host or config.listener.host,
        port=port if port is not None else config.listener.port,
    )
    mgmt_port = args.management_port
    if mgmt_port is None and os.environ.get("AMQPLITE_MANAGEMENT_PORT"):
        mgmt_port = int(os.environ["AMQPLITE_MANAGEMENT_PORT"])
    management = config.management
    if mgmt_port is not None:
        management = attrs.evolve(
            management, port=mgmt_port or management.port, enabled=mgmt_port != 0
        )
    return attrs.evolve(
        config,
        listener=listener,
        management=management,
        data_dir=args.data_dir or os.environ.get("AMQPLITE_DATA_DIR") or config.data_dir,
        log_level=args.log_level or os.environ.get("AMQPLITE_LOG_LEVEL") or config.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `amqplite` command."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            config = resolve_config(args)
        except ConfigError as exc:
            print(f"amqplite: configuration error: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"amqplite: bad environment setting: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        from amqplite.server.node import run_node

        try:
            trio.run(run_node, config)
        except OSError as exc:
            print(
                f"amqplite: cannot listen on {config.listener.host}:{config.listener.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        return 0
    return 2
