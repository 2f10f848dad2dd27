"""Reply methods the session layer builds for its clients."""

from __future__ import annotations

from amqplite.protocol.methods import build_method as _m

__all__ = ["_m"]
