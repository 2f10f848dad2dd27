"""The lifecycle states of a client connection, from its protocol header to closed."""

from __future__ import annotations

import enum


class ConnectionState(enum.Enum):
    """Lifecycle of a client connection."""

    AWAIT_HEADER = "await_header"
    AWAIT_START_OK = "await_start_ok"
    AWAIT_TUNE_OK = "await_tune_ok"
    AWAIT_OPEN = "await_open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close, waiting for close-ok
    CLOSED = "closed"
