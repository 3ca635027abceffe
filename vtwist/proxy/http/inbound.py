"""The ``http`` inbound: the registry hook that builds its factory (settings in
:mod:`vtwist.proxy.http.settings`, the protocol in :mod:`vtwist.proxy.http.server`)."""

from __future__ import annotations

from typing import Any

from vtwist.config.registry import InboundSpec
from vtwist.proxy.http.settings import HttpInboundSettings, parse_inbound_settings


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """Registry hook: a :class:`~vtwist.proxy.http.server.HttpProxyFactory`."""
    from vtwist.proxy.http.server import HttpProxyFactory

    settings: HttpInboundSettings = inbound.settings or HttpInboundSettings()
    policy = ctx.policy.inbound_level(settings.user_level, settings.timeout)
    return HttpProxyFactory(ctx.tunnels, tag=inbound.tag, accounts=dict(settings.accounts),
                            allow_transparent=settings.allow_transparent, policy=policy)


inbound = InboundSpec("http", parse_inbound_settings, build_inbound_factory)
