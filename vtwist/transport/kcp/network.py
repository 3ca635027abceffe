"""mKCP's registry hooks: settings parsing and endpoints from a StreamSettings."""

from __future__ import annotations

from typing import Any

from vtwist.config.node import Node
from vtwist.transport.kcp.config import KCPConfig, parse_kcp_settings
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint


def parse_settings(node: Node, inbound: bool) -> KCPConfig:
    """``kcpSettings`` (the same on both sides)."""
    return parse_kcp_settings(node)


def _config(stream: Any) -> KCPConfig:
    return stream.network_settings.get("kcp") or KCPConfig()


def server_base(reactor: Any, listen: str, port: int, stream: Any) -> KCPServerEndpoint:
    """The mKCP listening endpoint for ``stream``."""
    return KCPServerEndpoint(reactor, port, listen, _config(stream))


def client_base(reactor: Any, host: str, port: int, stream: Any) -> KCPClientEndpoint:
    """The mKCP connecting endpoint for ``stream``."""
    return KCPClientEndpoint(reactor, host, port, _config(stream))
