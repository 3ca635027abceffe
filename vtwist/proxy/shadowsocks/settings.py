"""Shadowsocks settings as V2Ray 4.34's JSON has them (``infra/conf/shadowsocks.go``), and
the outbound's registry entry (sans-IO; the inbound's entry is in ``inbound.py``).

Inbound ``settings``: ``method``, ``password``, ``email``, ``level``, ``network`` ("tcp",
"udp", "tcp,udp"; tcp when absent) and the older ``udp: true`` (adds udp).
Outbound ``settings``: ``servers`` [{``address``, ``port``, ``method``, ``password``,
``email``, ``level``, ``ota``}] (``ota`` is read and ignored, as 4.34 does for AEAD).
The methods are the AEAD ones and ``none``; the old stream ciphers are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.address import is_valid_domain, normalize_host, parse_ip
from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.shadowsocks.aead import Account, method_for

SUPPORTED = ("aes-128-gcm, aes-256-gcm, chacha20-poly1305 (chacha20-ietf-poly1305, "
             "aead_chacha20_poly1305), aead_aes_128_gcm, aead_aes_256_gcm, none (plain)")
NETWORKS = ("tcp", "udp")


def parse_networks(node: Node) -> tuple[str, ...]:
    """V2Ray's NetworkList at ``network``: "tcp", "udp", "tcp,udp" or an array; tcp when
    absent. Unknown names are ignored with a warning."""
    if not node.has("network") or node.get("network").value is None:
        return ("tcp",)
    found = set()
    for raw in node.comma_list("network"):
        name = raw.strip().lower()
        if name in NETWORKS:
            found.add(name)
        else:
            node.warn(f"network: unknown network {raw!r} ignored")
    if not found:
        raise node.error("no network specified (expected tcp, udp or tcp,udp)", "network")
    return tuple(n for n in NETWORKS if n in found)


def parse_account(node: Node) -> Account:
    """``method`` and ``password`` of an inbound or of one ``servers[]`` entry."""
    name = node.str("method", "")
    method = method_for(name)
    if method is None:
        raise node.error(f"unknown cipher method {name!r} (supported: {SUPPORTED})",
                         "method")
    password = node.str("password", "")
    if not password:
        raise node.error("Shadowsocks password is not specified", "password")
    return Account.from_password(method, password)


@dataclass
class ShadowsocksInboundSettings:
    """Validated ``settings`` of a shadowsocks inbound."""

    account: Account
    email: str = ""
    level: int = 0
    networks: tuple[str, ...] = ("tcp",)


def parse_inbound_settings(node: Node) -> ShadowsocksInboundSettings:
    """Validate a shadowsocks inbound's ``settings``."""
    if node.value is None:
        raise node.error("Shadowsocks password is not specified", "password")
    node.require_object()
    account = parse_account(node)
    email = node.str("email", "")
    level = node.int("level", 0, 0, 255)
    networks = parse_networks(node)
    if node.bool("udp", False) and "udp" not in networks:
        networks = (*networks, "udp")
    node.warn_unknown()
    return ShadowsocksInboundSettings(account, email, level, networks)


@dataclass
class ShadowsocksServer:
    """One ``servers[]`` entry."""

    address: str
    port: int
    account: Account
    email: str = ""
    level: int = 0


@dataclass
class ShadowsocksOutboundSettings:
    """Validated ``settings`` of a shadowsocks outbound."""

    servers: list[ShadowsocksServer] = field(default_factory=list)


def parse_outbound_settings(node: Node) -> ShadowsocksOutboundSettings:
    """Validate ``servers[]``."""
    servers = node.get("servers")
    settings = ShadowsocksOutboundSettings()
    for server in servers.items():
        server.require_object()
        address = server.str("address", "").strip()
        if not address:
            raise server.error("Shadowsocks server address is not set", "address")
        if parse_ip(address) is None and not is_valid_domain(address):
            raise server.error(f"expected an IP address or a domain, got {address!r}",
                               "address")
        port = server.port("port")
        account = parse_account(server)
        email = server.str("email", "")
        level = server.int("level", 0, 0, 255)
        if server.bool("ota", False):
            server.warn("ota (one-time auth) does not apply to AEAD ciphers; ignored")
        server.warn_unknown()
        settings.servers.append(ShadowsocksServer(normalize_host(address), port, account,
                                                  email, level))
    if not settings.servers:
        raise servers.error("0 Shadowsocks server configured (expected at least one)")
    node.warn_unknown()
    return settings


outbound = OutboundSpec("shadowsocks", parse_outbound_settings,
                        "vtwist.proxy.shadowsocks.outbound:build_outbound")
