"""QUIC's registry hooks: endpoints from a StreamSettings (the parser is
:func:`vtwist.transport.quic.settings.parse_quic_settings`). TLS is inside QUIC: the
stream's tlsSettings (with ``security: tls``) configure it, and the TLS layer stays out."""

from __future__ import annotations

from typing import Any

from vtwist.transport.kcp.obfs import HEADER_TYPES
from vtwist.transport.quic.endpoints import QUICClientEndpoint, QUICServerEndpoint
from vtwist.transport.quic.settings import SECURITIES, QUICSettings


def _settings(stream: Any) -> QUICSettings:
    return stream.network_settings.get("quic") or QUICSettings()


def _tls(stream: Any) -> Any:
    return stream.tls if stream.security == "tls" else None


def server_base(reactor: Any, listen: str, port: int, stream: Any) -> QUICServerEndpoint:
    """The QUIC listening endpoint for ``stream``."""
    return QUICServerEndpoint(reactor, port, "" if listen in ("0.0.0.0", "") else listen,
                              _settings(stream), _tls(stream))


def client_base(reactor: Any, host: str, port: int, stream: Any) -> QUICClientEndpoint:
    """The QUIC connecting endpoint for ``stream``."""
    return QUICClientEndpoint(reactor, host, port, _settings(stream), _tls(stream))


def _options(kwargs: dict[str, str]) -> QUICSettings:
    opts = {k.lower(): v for k, v in kwargs.items()}
    settings = QUICSettings(security=opts.pop("security", "none").lower(),
                            key=opts.pop("key", ""),
                            header_type=opts.pop("header", "none").lower())
    if opts:
        raise ValueError(f"unknown quic endpoint options: {', '.join(sorted(opts))}")
    if settings.security not in SECURITIES or settings.header_type not in HEADER_TYPES:
        raise ValueError("quic endpoint: bad security or header")
    return settings


def server_from_string(reactor: Any, port: str | None = None, interface: str = "",
                       **kwargs: str) -> QUICServerEndpoint:
    """``quic:port=...`` for ``serverFromString``."""
    if port is None:
        raise ValueError("quic server endpoint needs port=")
    return QUICServerEndpoint(reactor, int(port), interface, _options(kwargs))


def client_from_string(reactor: Any, host: str | None = None, port: str | None = None,
                       **kwargs: str) -> QUICClientEndpoint:
    """``quic:host=...:port=...`` for ``clientFromString``."""
    if host is None or port is None:
        raise ValueError("quic client endpoint needs host= and port=")
    return QUICClientEndpoint(reactor, host, int(port), _options(kwargs))
