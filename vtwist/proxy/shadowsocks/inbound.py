"""The ``shadowsocks`` inbound's registry entry: its settings parser and the server factory."""

from __future__ import annotations

from typing import Any

from vtwist.config.registry import InboundSpec
from vtwist.proxy.shadowsocks.settings import parse_inbound_settings

__all__ = ["inbound", "parse_inbound_settings", "build_inbound_factory"]


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """The inbound's :class:`~vtwist.proxy.shadowsocks.server.ShadowsocksServerFactory`
    (its TCP and UDP listeners, on every port, share it and its salt filters)."""
    from vtwist.proxy.shadowsocks.server import ShadowsocksServerFactory

    return ShadowsocksServerFactory(ctx.tunnels, inbound.settings, ctx.policy, inbound.tag)


inbound = InboundSpec("shadowsocks", parse_inbound_settings, build_inbound_factory)
