"""V2Ray's reverse proxy (``reverse``: bridges and portals), riding on Mux.Cool.

:mod:`~vtwist.app.reverse.bridge` dials out from behind NAT and serves the sessions the
portal opens; :mod:`~vtwist.app.reverse.portal` is an outbound on the public side;
:mod:`~vtwist.app.reverse.control` is their control message; :mod:`~vtwist.app.reverse.pipe`
joins a mux endpoint to a tunnel in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["reverse_bridges", "reverse_portals"]


def reverse_portals(config: Any, ctx: Any, reuse: Sequence[Any] = ()) -> list[Any]:
    """A :class:`~vtwist.app.reverse.portal.PortalOutbound` per portal of ``config`` (a
    ReverseConfig or None), registered in ``ctx.outbounds`` by tag. A portal of ``reuse``
    (the outbounds before a reload) with the same tag and domain is kept, with its bridge
    connections."""
    if config is None or not config.portals:
        return []
    from vtwist.app.reverse.portal import PortalOutbound

    old = {(o.tag, o.domain): o for o in reuse if isinstance(o, PortalOutbound)}
    portals = [old.get((p.tag, p.domain)) or PortalOutbound(ctx.reactor, p.tag, p.domain)
               for p in config.portals]
    for portal in portals:
        ctx.outbounds[portal.tag] = portal
    return portals


def reverse_bridges(config: Any, tunnels: Any) -> list[Any]:
    """A :class:`~vtwist.app.reverse.bridge.Bridge` service per bridge of ``config``."""
    if config is None or not config.bridges:
        return []
    from vtwist.app.reverse.bridge import Bridge

    return [Bridge(tunnels, b.tag, b.domain) for b in config.bridges]
