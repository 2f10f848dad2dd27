"""Reply methods the session layer builds for its clients."""

from __future__ import annotations

from typing import Any


def _m(cls: Any, **fields: Any) -> Any:
    """Build a pamqp method without its name validation (RabbitMQ allows any UTF-8 name)."""
    method = cls()
    for name, value in fields.items():
        setattr(method, name, value)
    return method
