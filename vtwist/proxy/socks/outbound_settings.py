"""The ``socks`` outbound's settings and registry entry (no Twisted here)."""

from __future__ import annotations

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.upstream import UpstreamSettings, parse_servers


def parse_outbound_settings(node: Node) -> UpstreamSettings:
    """Validate ``servers[]``: ``address``, ``port``, ``users[]`` (``user``, ``pass`` of at
    most 255 bytes each, as RFC 1929 carries them; ``level``, ``email``)."""
    return parse_servers(node, max_bytes=255)


outbound = OutboundSpec("socks", parse_outbound_settings,
                        "vtwist.proxy.socks.outbound:build_outbound")
