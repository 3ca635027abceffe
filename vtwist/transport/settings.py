"""streamSettings: which network (tcp, kcp, ws ...) and security (tls) a connection rides.

:class:`StreamSettings` is plain data. :func:`parse_stream_settings` validates the JSON,
asking the network registry (:mod:`vtwist.transport.registry`) which networks exist and how
each one's ``*Settings`` object is parsed. Nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vtwist.config.node import Node
from vtwist.transport import registry
from vtwist.transport.sockopt import SockoptSettings, parse_sockopt
from vtwist.transport.tls.settings import TLSSettings, parse_tls_settings

SECURITIES = ("none", "tls")
#: What a network's parser gets when its ``*Settings`` object is absent: an empty object
#: (by identity, QUIC tells it from ``{}``: V2Ray 4.34's QUIC without quicSettings seals its
#: packets with AES-128-GCM).
ABSENT: dict[str, Any] = {}
#: streamSettings keys vtwist accepts and ignores (besides the unsupported networks' settings).
IGNORED_KEYS: tuple[str, ...] = ()


@dataclass
class StreamSettings:
    """Validated streamSettings. Each network's settings are its own module's type."""

    network: str = "tcp"
    security: str = "none"
    #: Parsed ``*Settings`` objects by network name (e.g. ``"tcp"`` -> TCPSettings).
    network_settings: dict[str, Any] = field(default_factory=dict)
    tls: TLSSettings | None = None  # when security is tls
    #: ``sockopt`` (vtwist.transport.sockopt): tproxy mode and mark for dokodemo-door.
    sockopt: SockoptSettings = field(default_factory=SockoptSettings)

    @property
    def settings(self) -> Any:
        """The settings of the network in use (None when it has none)."""
        return self.network_settings.get(self.network)

    @property
    def tcp(self) -> Any:
        """``tcpSettings`` (a TCPSettings)."""
        return self.network_settings.get("tcp")

    @property
    def kcp(self) -> Any:
        """``kcpSettings`` (a KCPConfig) when the network is kcp."""
        return self.network_settings.get("kcp")

    @property
    def ws(self) -> Any:
        """``wsSettings`` (a WSSettings) when the network is ws."""
        return self.network_settings.get("ws")

    @property
    def accept_proxy_protocol(self) -> bool:
        """True when the inbound expects a PROXY protocol header first."""
        return bool(getattr(self.settings, "accept_proxy_protocol", False))


def parse_stream_settings(node: Node, inbound: bool,
                          transport: Node | None = None) -> StreamSettings:
    """Validate a ``streamSettings`` object (``node`` may wrap None for the default).

    ``transport`` is the top-level ``transport`` object: like V2Ray, its ``*Settings`` apply
    where the stream gives none of its own.
    """
    node = node.or_empty()

    def part(key: str) -> Node:
        if node.has(key) or transport is None or not transport.has(key):
            return node.get(key, ABSENT)
        return transport.get(key, {})

    network_name = node.str("network", "tcp", lower=True)
    network = registry.lookup(network_name)
    if network is None:
        if registry.unsupported(network_name) is not None:
            raise node.error(f"network {network_name!r} is not supported by vtwist", "network")
        raise node.error(f"expected one of {', '.join(registry.all_names())}, "
                         f"got {network_name!r}", "network")
    settings = StreamSettings(network=network.name)
    settings.security = node.str("security", "none", lower=True)
    if settings.security == "":
        settings.security = "none"
    if settings.security == "xtls":
        raise node.error("security 'xtls' is not supported by vtwist", "security")
    if settings.security not in SECURITIES:
        raise node.error(f"expected none or tls, got {settings.security!r}", "security")

    for entry in registry.networks():
        if entry.settings_key is None:
            continue
        if entry is network or entry.always_parsed:
            settings.network_settings[entry.name] = entry.parse_settings(
                part(entry.settings_key), inbound)
        else:
            node.has(entry.settings_key)
    if settings.security == "tls":
        settings.tls = parse_tls_settings(node.get("tlsSettings", {}), inbound)
    else:
        node.has("tlsSettings")
    settings.sockopt = parse_sockopt(node.get("sockopt", {}))
    for ignored in IGNORED_KEYS + registry.unsupported_settings_keys():
        node.has(ignored)
    node.warn_unknown()
    return settings
