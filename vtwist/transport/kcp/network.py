"""mKCP's registry hooks: endpoints from a StreamSettings (the parser is
:func:`vtwist.transport.kcp.config.parse_settings`)."""

from __future__ import annotations

from typing import Any

from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint


def _config(stream: Any) -> KCPConfig:
    return stream.network_settings.get("kcp") or KCPConfig()


def server_base(reactor: Any, listen: str, port: int, stream: Any) -> KCPServerEndpoint:
    """The mKCP listening endpoint for ``stream``."""
    return KCPServerEndpoint(reactor, port, listen, _config(stream))


def client_base(reactor: Any, host: str, port: int, stream: Any) -> KCPClientEndpoint:
    """The mKCP connecting endpoint for ``stream``."""
    return KCPClientEndpoint(reactor, host, port, _config(stream))
