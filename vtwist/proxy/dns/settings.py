"""The ``dns`` outbound's settings and registry entry (no Twisted here).

As V2Ray 4.34: ``network`` (tcp or udp: how queries it does not answer are forwarded;
absent: as they came), ``address`` and ``port`` (where they go; absent: the query's own
destination).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.address import is_valid_domain, parse_ip
from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec


@dataclass
class DnsOutboundSettings:
    """Validated ``dns`` outbound settings ("" / 0: keep the query's own)."""

    network: str = ""
    address: str = ""
    port: int = 0


def parse_outbound_settings(node: Node) -> DnsOutboundSettings:
    """Validate the dns outbound's settings."""
    settings = DnsOutboundSettings()
    if node.value is None:
        return settings
    if node.has("network") and node.value["network"] not in (None, ""):
        settings.network = node.str("network", lower=True, choices=("tcp", "udp"))
    address = node.str("address", "").strip()
    if address:
        ip = parse_ip(address)
        if ip is None and not is_valid_domain(address):
            raise node.error(f"expected an IP address or domain, got {address!r}", "address")
        settings.address = str(ip) if ip is not None else address
    settings.port = node.int("port", 0, 0, 65535)
    node.warn_unknown()
    return settings


outbound = OutboundSpec("dns", parse_outbound_settings, "vtwist.proxy.dns.outbound:build_outbound")
