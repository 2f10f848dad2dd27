"""SASL for connection.start-ok: PLAIN and AMQPLAIN responses to (user, password)."""

from __future__ import annotations

import struct

MECHANISMS = ("PLAIN", "AMQPLAIN")


def _as_bytes(response: str | bytes) -> bytes:
    return response.encode("utf-8", "surrogateescape") if isinstance(response, str) else response


def parse_plain(response: bytes) -> tuple[str, str] | None:
    """PLAIN: authzid NUL authcid NUL password."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        return None
    return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")


def parse_amqplain(response: bytes) -> tuple[str, str] | None:
    """AMQPLAIN: a field table without its length prefix holding LOGIN and PASSWORD longstrs."""
    values: dict[str, str] = {}
    offset = 0
    try:
        while offset < len(response):
            key_len = response[offset]
            key = response[offset + 1 : offset + 1 + key_len].decode("utf-8", "replace")
            offset += 1 + key_len
            kind = response[offset : offset + 1]
            offset += 1
            if kind != b"S":
                return None
            (length,) = struct.unpack_from(">I", response, offset)
            offset += 4
            values[key] = response[offset : offset + length].decode("utf-8", "replace")
            offset += length
    except (IndexError, struct.error):
        return None
    if "LOGIN" not in values or "PASSWORD" not in values:
        return None
    return values["LOGIN"], values["PASSWORD"]


def parse_credentials(mechanism: str, response: str | bytes) -> tuple[str, str] | None:
    """(user, password) from a start-ok response, or None if it cannot be read."""
    raw = _as_bytes(response)
    if mechanism == "PLAIN":
        return parse_plain(raw)
    if mechanism == "AMQPLAIN":
        return parse_amqplain(raw)
    return None
