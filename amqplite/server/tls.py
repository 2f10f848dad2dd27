"""TLS for the AMQP and management listeners: the server's SSL context from config, and the client's identity."""

from __future__ import annotations

import ssl
from typing import Any

import trio

from amqplite.config.models import TlsConfig
from amqplite.config.source import ConfigError

WHERE = "the configuration"


def server_context(tls: TlsConfig, section: str = "tls") -> ssl.SSLContext:
    """An SSLContext for the server side, from <section>.certfile/keyfile/cafile/verify_peer.

    A file that cannot be loaded is a ConfigError naming its key (one line at start-up).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if not tls.certfile:
        raise ConfigError(
            WHERE, f"{section}.certfile", f"a PEM certificate is needed with {section}.enabled"
        )
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            WHERE,
            f"{section}.certfile",
            f"a certificate and key that load ({exc})",
            value=tls.certfile,
        ) from None
    if tls.cafile:
        try:
            context.load_verify_locations(tls.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                WHERE,
                f"{section}.cafile",
                f"PEM CA certificates that load ({exc})",
                value=tls.cafile,
            ) from None
    if tls.verify_peer:
        context.verify_mode = ssl.CERT_REQUIRED if tls.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_common_name(stream: trio.SSLStream[Any]) -> str | None:
    """The CN of the client certificate the handshake verified, if there was one."""
    cert = stream.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
