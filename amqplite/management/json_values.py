"""AMQP field values (tables, bytes, timestamps, decimals) as JSON-compatible values."""

from __future__ import annotations

import datetime
import decimal
from typing import Any, overload


def jsonable(value: Any) -> Any:
    """Field values (tables, bytes, timestamps, decimals) as JSON-compatible values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return float(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


class BodyValueError(ValueError):
    """A request body's value that is not what the key expects (the message names key and type)."""


def body_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field as RabbitMQ reads it: true/false, or the strings "true"/"false"."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise BodyValueError(f"'{key}' must be true or false, got {value!r}")


@overload
def body_int(body: dict[str, Any], key: str, default: int) -> int: ...


@overload
def body_int(body: dict[str, Any], key: str, default: None) -> int | None: ...


def body_int(body: dict[str, Any], key: str, default: int | None) -> int | None:
    """An integer field as RabbitMQ reads it: a number (truncated) or a string of digits."""
    value = body.get(key, default)
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise BodyValueError(f"'{key}' must be an integer, got {value!r}")
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise BodyValueError(f"'{key}' must be an integer, got {value!r}")
