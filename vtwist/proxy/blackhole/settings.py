"""The ``blackhole`` outbound's settings and registry entry (no Twisted here)."""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec


@dataclass
class BlackholeSettings:
    """Validated blackhole ``settings``: ``response.type`` none or http."""

    response: str = "none"


def parse_outbound_settings(node: Node) -> BlackholeSettings:
    """Validate blackhole's settings."""
    if node.value is None:
        return BlackholeSettings()
    response = node.get("response", {})
    kind = response.str("type", "none", choices=("none", "http"), lower=True)
    response.warn_unknown()
    node.warn_unknown()
    return BlackholeSettings(kind)


outbound = OutboundSpec("blackhole", parse_outbound_settings,
                        "vtwist.proxy.blackhole.outbound:build_outbound")
