"""The ``dokodemo-door`` inbound's settings as V2Ray 4.34 reads them, and its registry hook.

No Twisted here: :func:`build_inbound_factory` imports the runtime module only to build.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from vtwist.address import is_valid_domain, normalize_host, parse_ip
from vtwist.config.node import Node
from vtwist.config.registry import InboundSpec

NETWORKS = ("tcp", "udp")


@dataclass
class DokodemoSettings:
    """Validated dokodemo-door ``settings``."""

    #: Where every connection goes (an IP literal or a domain); None: only the original
    #: destination of a redirected connection (``follow_redirect``) is known.
    address: str | None = None
    port: int = 0
    networks: tuple[str, ...] = ("tcp",)
    timeout: int = 0  # deprecated V2Ray field: connIdle override for level 0
    user_level: int = 0
    follow_redirect: bool = False


def parse_networks(node: Node) -> tuple[str, ...]:
    """V2Ray's NetworkList at ``network``: ``"tcp"``, ``"udp"``, ``"tcp,udp"`` or an array.

    Absent means tcp (as in V2Ray). Names are trimmed and lower-cased; ``unix`` is refused,
    other unknown names are ignored with a warning (V2Ray ignores them silently).
    """
    if not node.has("network") or node.get("network").value is None:
        return ("tcp",)
    found: list[str] = []
    for raw in node.comma_list("network"):
        name = raw.strip().lower()
        if name in NETWORKS:
            if name not in found:
                found.append(name)
        elif name == "unix":
            raise node.error("network 'unix' is not supported by vtwist", "network")
        else:
            node.warn(f"network: unknown network {raw!r} ignored")
    if not found:
        raise node.error("no network specified (expected tcp, udp or tcp,udp)", "network")
    return tuple(n for n in NETWORKS if n in found)


def parse_inbound_settings(node: Node) -> DokodemoSettings:
    """Validate ``settings`` of a dokodemo-door inbound: address, port, network, timeout,
    userLevel, followRedirect."""
    settings = DokodemoSettings()
    if node.value is None:
        node.warn("dokodemo-door without settings: no destination, every connection is "
                  "refused")
        return settings
    node.require_object()
    address = node.str("address", "")
    if address:
        if parse_ip(address) is None and not is_valid_domain(address):
            raise node.error(f"expected an IP address or a domain, got {address!r}", "address")
        settings.address = normalize_host(address)
    settings.port = node.int("port", 0, 0, 65535)
    settings.networks = parse_networks(node)
    settings.timeout = node.int("timeout", 0, 0)
    if settings.timeout:
        node.warn("timeout is deprecated; use policy.levels.N.connIdle")
    settings.user_level = node.int("userLevel", 0, 0)
    settings.follow_redirect = node.bool("followRedirect", False)
    if settings.follow_redirect and not sys.platform.startswith("linux"):
        node.warn("followRedirect works on Linux only; connections go to address:port")
    if settings.address is None and not settings.follow_redirect:
        node.warn("dokodemo-door without address: every connection is refused "
                  "(unable to get destination)")
    node.warn_unknown()
    return settings


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """Registry hook: a :class:`~vtwist.proxy.dokodemo.server.DokodemoFactory`."""
    from vtwist.proxy.dokodemo.server import DokodemoFactory

    settings: DokodemoSettings = inbound.settings or DokodemoSettings()
    policy = ctx.policy.inbound_level(settings.user_level, settings.timeout)
    sockopt = getattr(inbound.stream, "sockopt", None)
    tproxy = getattr(sockopt, "tproxy", "off")
    if settings.follow_redirect and tproxy == "off":
        tproxy = "redirect"  # as V2Ray: followRedirect alone means iptables REDIRECT
    return DokodemoFactory(
        ctx.tunnels, settings, tag=inbound.tag, policy=policy,
        tproxy=tproxy, mark=getattr(sockopt, "mark", 0))


inbound = InboundSpec("dokodemo-door", parse_inbound_settings, build_inbound_factory)
