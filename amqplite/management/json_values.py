"""AMQP field values (tables, bytes, timestamps, decimals) as JSON-compatible values."""

from __future__ import annotations

import datetime
import decimal
from typing import Any


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
