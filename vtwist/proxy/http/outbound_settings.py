"""The ``http`` outbound's settings and registry entry (no Twisted here)."""

from __future__ import annotations

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.upstream import UpstreamSettings, parse_servers


def parse_outbound_settings(node: Node) -> UpstreamSettings:
    """Validate ``servers[]``: ``address``, ``port``, ``users[]`` (``user``, ``pass``,
    ``level``, ``email``)."""
    return parse_servers(node)


outbound = OutboundSpec("http", parse_outbound_settings,
                        "vtwist.proxy.http.outbound:build_outbound")
