"""The ``vless`` inbound's registry entry: its settings parser and the server factory."""

from __future__ import annotations

from typing import Any

from vtwist.config.registry import InboundSpec
from vtwist.proxy.vless.settings import VLESSInboundSettings, parse_inbound_settings

__all__ = ["build_inbound_factory", "inbound", "parse_inbound_settings"]


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """The server factory of a vless inbound; all its ports share it."""
    from vtwist.proxy.vless.server import VLESSServerFactory

    settings: VLESSInboundSettings = inbound.settings
    return VLESSServerFactory(settings.clients, ctx.tunnels, ctx.policy, inbound.tag,
                              fallbacks=settings.fallbacks)


inbound = InboundSpec("vless", parse_inbound_settings, build_inbound_factory)
