"""tcpSettings: plain TCP, optionally with V2Ray's HTTP header disguise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vtwist.config.node import Node


@dataclass
class TCPSettings:
    """Validated ``tcpSettings``."""

    header_type: str = "none"
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    accept_proxy_protocol: bool = False


def parse_tcp_settings(node: Node, inbound: bool) -> TCPSettings:
    """Validate ``tcpSettings`` (the HTTP header part is filled in by the transports work)."""
    settings = TCPSettings()
    settings.accept_proxy_protocol = node.bool("acceptProxyProtocol", False)
    header = node.get("header", {})
    settings.header_type = header.str("type", "none", lower=True)
    if settings.header_type not in ("none",):
        raise header.error(f"expected none, got {settings.header_type!r}", "type")
    header.warn_unknown()
    node.warn_unknown()
    return settings
