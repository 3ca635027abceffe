"""The ``trojan`` inbound's registry entry: its settings parser and the server factory."""

from __future__ import annotations

from typing import Any

from vtwist.config.registry import InboundSpec
from vtwist.proxy.trojan.settings import parse_inbound_settings

__all__ = ["inbound", "parse_inbound_settings", "build_inbound_factory"]


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """The server factory of a trojan inbound; all its ports share it."""
    from vtwist.proxy.trojan.server import TrojanServerFactory

    return TrojanServerFactory(inbound.settings, ctx.tunnels, ctx.policy, inbound.tag)


inbound = InboundSpec("trojan", parse_inbound_settings, build_inbound_factory)
