"""The ``freedom`` outbound's settings and registry entry (no Twisted here)."""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec

DOMAIN_STRATEGIES = ("AsIs", "UseIP", "UseIPv4", "UseIPv6")


@dataclass
class FreedomSettings:
    """Validated freedom ``settings``."""

    domain_strategy: str = "AsIs"
    redirect: tuple[str, int] | None = None
    user_level: int = 0


def parse_outbound_settings(node: Node) -> FreedomSettings:
    """Validate freedom's ``settings`` (domainStrategy, redirect, userLevel)."""
    if node.value is None:
        return FreedomSettings()
    settings = FreedomSettings()
    strategy = node.str("domainStrategy", "AsIs")
    matches = [s for s in DOMAIN_STRATEGIES if s.lower() == strategy.lower()]
    if not matches:
        raise node.error(f"expected one of {', '.join(DOMAIN_STRATEGIES)}, got {strategy!r}",
                         "domainStrategy")
    settings.domain_strategy = matches[0]
    redirect = node.str("redirect", "")
    if redirect:
        host, sep, port = redirect.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise node.error(f'expected "host:port", got {redirect!r}', "redirect")
        settings.redirect = (host.strip("[]"), int(port))
    settings.user_level = node.int("userLevel", 0, 0)
    node.warn_unknown()
    return settings


outbound = OutboundSpec("freedom", parse_outbound_settings,
                        "vtwist.proxy.freedom.outbound:build_outbound")
