"""Trojan settings as V2Ray 4.34's JSON has them (``infra/conf/trojan.go``), and the
outbound's registry entry (the inbound's is in :mod:`.inbound`). No Twisted here."""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.fallback.settings import Fallback, parse_fallbacks
from vtwist.proxy.trojan.codec import password_key


@dataclass(frozen=True)
class TrojanUser:
    """One Trojan account: the password, its hex SHA-224 key, level and email."""

    password: str
    level: int = 0
    email: str = ""

    @property
    def key(self) -> bytes:
        """The 56 hex digits the request starts with."""
        return password_key(self.password)

    @property
    def label(self) -> str:
        """How log lines name the user."""
        return self.email or "(no email)"


@dataclass
class TrojanInboundSettings:
    """Validated ``settings`` of a trojan inbound."""

    clients: list[TrojanUser] = field(default_factory=list)
    #: ``fallbacks`` as :func:`vtwist.proxy.fallback.settings.parse_fallbacks` reads them
    fallbacks: list[Fallback] = field(default_factory=list)


def parse_inbound_settings(node: Node) -> TrojanInboundSettings:
    """Validate ``clients`` [{password, level, email}] and ``fallbacks``; ``fallback``
    (one object) is refused as 4.34 refuses it."""
    settings = TrojanInboundSettings()
    if node.value is None:
        return settings
    if node.has("fallback"):
        raise node.error('please use "fallbacks":[{}] instead of "fallback":{}', "fallback")
    emails: dict[str, str] = {}
    for item in node.get("clients", []).items():
        user = TrojanUser(item.str("password", ""), item.int("level", 0, 0, 255),
                          item.str("email", ""))
        item.warn_unknown()
        if user.email:
            low = user.email.lower()
            if low in emails:
                raise item.error(f"user {user.email} already exists (also at {emails[low]})",
                                 "email")
            emails[low] = item.path
        settings.clients.append(user)
    if node.has("fallbacks"):
        settings.fallbacks = parse_fallbacks(node.get("fallbacks"))
    node.warn_unknown()
    return settings


@dataclass(frozen=True)
class TrojanServer:
    """One ``servers[]`` entry of the outbound."""

    address: str
    port: int
    user: TrojanUser


@dataclass
class TrojanOutboundSettings:
    """Validated ``settings`` of a trojan outbound."""

    servers: list[TrojanServer] = field(default_factory=list)


def parse_outbound_settings(node: Node) -> TrojanOutboundSettings:
    """Validate ``servers`` [{address, port, password, email, level}] with 4.34's checks."""
    settings = TrojanOutboundSettings()
    servers = node.get("servers", [])
    for item in servers.items():
        address = item.str("address", "")
        if not address:
            raise item.error("Trojan server address is not set", "address")
        port = item.port("port")
        password = item.str("password", "")
        if not password:
            raise item.error("Trojan password is not specified", "password")
        user = TrojanUser(password, item.int("level", 0, 0, 255), item.str("email", ""))
        item.warn_unknown()
        settings.servers.append(TrojanServer(address.strip("[]"), port, user))
    if not settings.servers:
        raise servers.error("0 Trojan server configured")
    node.warn_unknown()
    return settings


outbound = OutboundSpec("trojan", parse_outbound_settings,
                        "vtwist.proxy.trojan.outbound:build_outbound")
