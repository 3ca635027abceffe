"""The ``vmess`` inbound's registry entry: its settings parser and the server factory."""

from __future__ import annotations

from typing import Any

from vtwist.config.registry import InboundSpec
from vtwist.proxy.vmess.settings import VMessInboundSettings, parse_inbound_settings

__all__ = ["inbound", "parse_inbound_settings", "build_inbound_factory"]


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """The server factory of a vmess inbound; all its ports share it (and its users and
    replay filters)."""
    from vtwist.proxy.vmess.server import VMessServerFactory, VMessServerState

    settings: VMessInboundSettings = inbound.settings
    state = VMessServerState(settings.clients, legacy=settings.legacy,
                             disable_insecure=settings.disable_insecure,
                             default_level=settings.default_level,
                             default_alter_id=settings.default_alter_id)
    factory = VMessServerFactory(state, ctx.tunnels, ctx.policy, inbound.tag)
    if settings.detour:
        from vtwist.proxy.vmess.detour import Detour

        factory.detour = Detour(getattr(ctx, "inbounds", {}), settings.detour)
    return factory


inbound = InboundSpec("vmess", parse_inbound_settings, build_inbound_factory)
