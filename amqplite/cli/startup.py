"""Start-up checks of the CLI: one-line usage errors, ports, the data directory, error unwrapping."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from amqplite.config.source import ConfigError

MAX_PORT = 65535
PORT_EXPECTED = f"expected a port number from 0 to {MAX_PORT}"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (with a pointer to --help), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message (see prog --help)` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port_arg(text: str) -> int:
    """An argparse type: a TCP port number 0..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, {PORT_EXPECTED}") from None
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"got {text!r}, {PORT_EXPECTED}")
    return port


def env_port(name: str) -> int | None:
    """A port from the environment variable `name` (None when unset or empty)."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        raise ConfigError("environment", name, PORT_EXPECTED, value=text)
    return port


def check_data_dir(path: str, where: str, key: str, line: int | None = None) -> None:
    """Refuse a data directory that is a file, cannot be created or cannot be written."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(where, key, "expected a directory, it is a file", line, value=path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            where, key, f"expected a directory that can be created ({reason})", line, value=path
        ) from None
    probe = directory / f".amqplite-write-check-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            where, key, f"expected a writable directory ({reason})", line, value=path
        ) from None


def leaf_error(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, e.g. from a trio nursery."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def fail(message: str, status: int) -> int:
    """Print `amqplite: message` on standard error; the exit status."""
    print(f"amqplite: {message}", file=sys.stderr)
    return status
