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
                             disable_insecure=settings.disable_insecure)
    return VMessServerFactory(state, ctx.tunnels, ctx.policy, inbound.tag)


inbound = InboundSpec("vmess", parse_inbound_settings, build_inbound_factory)
