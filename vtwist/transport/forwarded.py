"""The client behind a reverse proxy: the first ``X-Forwarded-For`` address as a peer."""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address


def forwarded_peer(value: str | bytes | None) -> IPv4Address | IPv6Address | None:
    """The first address of an ``X-Forwarded-For`` value as a TCP peer with port 0 (as V2Ray
    reports it), or None when there is none or it is not an IP address."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        ip = ipaddress.ip_address(value.split(",")[0].strip())
    except ValueError:
        return None
    return (IPv6Address if ip.version == 6 else IPv4Address)("TCP", str(ip), 0)
