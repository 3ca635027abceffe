"""Destination: the one address type every protocol in vtwist speaks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Network = Literal["tcp", "udp"]

_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


@dataclass(frozen=True, slots=True)
class Destination:
    """A network target: ``network`` tcp/udp, ``host`` an IP literal or domain, ``port``.

    IPv6 hosts are stored without brackets (``"::1"``).
    """

    network: Network
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.network not in ("tcp", "udp"):
            raise ValueError(f"network must be tcp or udp, got {self.network!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if not self.host:
            raise ValueError("empty host")

    @classmethod
    def tcp(cls, host: str, port: int) -> Destination:
        """A TCP destination, normalising an IP-looking host."""
        return cls("tcp", normalize_host(host), port)

    @classmethod
    def udp(cls, host: str, port: int) -> Destination:
        """A UDP destination, normalising an IP-looking host."""
        return cls("udp", normalize_host(host), port)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address object, or None for a domain."""
        return parse_ip(self.host)

    @property
    def is_ipv4(self) -> bool:
        """True when the host is an IPv4 literal."""
        return isinstance(self.ip, ipaddress.IPv4Address)

    @property
    def is_ipv6(self) -> bool:
        """True when the host is an IPv6 literal."""
        return isinstance(self.ip, ipaddress.IPv6Address)

    @property
    def is_domain(self) -> bool:
        """True when the host is a domain name, not an IP literal."""
        return self.ip is None

    def with_network(self, network: Network) -> Destination:
        """The same host and port on another network."""
        return Destination(network, self.host, self.port)

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 in brackets."""
        if ":" in self.host and self.is_ipv6:  # (no IPv4 literal or domain has a colon)
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        """V2Ray's access-log form, e.g. ``tcp:example.com:443``."""
        return f"{self.network}:{self.hostport}"


#: How many host strings :func:`parse_ip` and :func:`normalize_host` remember. A connection
#: parses its hosts a dozen times (codecs, routing, access lines, the outbound's endpoint) at
#: ~4 µs each; the answers are immutable, so recent hosts are answered from a bounded cache.
HOST_CACHE_SIZE = 4096


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        return None


_parse_ip_cached = lru_cache(maxsize=HOST_CACHE_SIZE)(_parse_ip)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an IP literal (IPv6 with or without brackets); None if it is not one."""
    if type(host) is str:
        return _parse_ip_cached(host)
    return _parse_ip(host)


def _normalize_host(host: str) -> str:
    ip = _parse_ip(host)
    if ip is None:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


_normalize_host_cached = lru_cache(maxsize=HOST_CACHE_SIZE)(_normalize_host)


def normalize_host(host: str) -> str:
    """Canonical form of a host: IP literals compressed and unbracketed, domains as given."""
    if type(host) is str:
        return _normalize_host_cached(host)
    return _normalize_host(host)


def is_valid_domain(host: str) -> bool:
    """True for a domain made only of the characters V2Ray accepts (``[0-9A-Za-z._-]``)."""
    return 0 < len(host) <= 255 and all(c in _DOMAIN_CHARS for c in host)


def format_address(address: object) -> str:
    """``ip:port`` (IPv6 in brackets) of a Twisted address object, or ``"unknown"``."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return "unknown"
    host = normalize_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
