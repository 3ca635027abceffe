"""VLESS settings as V2Ray 4.34's ``infra/conf/vless.go`` reads them (no Twisted here).

Inbound: ``clients`` [{``id``, ``level``, ``email``, ``flow``}], ``decryption`` (must be
``"none"``), ``fallbacks`` (:mod:`vtwist.proxy.fallback.settings`). Outbound: ``vnext``
[{``address``, ``port``, ``users`` [{``id``, ``encryption`` (must be ``"none"``), ``level``,
``flow``}]}]. 4.34 accepts any ``flow`` string and then ignores it (it sends and reads no
addons), so vtwist does the same and warns; a ``flow`` that is not a string is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.fallback.settings import Fallback, parse_fallbacks
from vtwist.proxy.vmess.ids import log_uuid, parse_uuid


@dataclass(frozen=True)
class VLESSAccount:
    """One VLESS user."""

    uuid: bytes
    level: int = 0
    email: str = ""
    flow: str = ""

    @property
    def label(self) -> str:
        """The email, else the UUID's first 8 hex digits (for log lines: never the whole
        UUID, it is the user's secret)."""
        return self.email or log_uuid(self.uuid)

    @classmethod
    def from_text(cls, text: str, level: int = 0, email: str = "") -> VLESSAccount:
        """An account from a textual UUID."""
        return cls(parse_uuid(text), level, email)


@dataclass
class VLESSInboundSettings:
    """Validated ``settings`` of a vless inbound."""

    clients: list[VLESSAccount] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)


@dataclass
class VLESSServer:
    """One ``vnext[]`` entry."""

    address: str
    port: int
    users: list[VLESSAccount] = field(default_factory=list)


@dataclass
class VLESSOutboundSettings:
    """Validated ``settings`` of a vless outbound."""

    servers: list[VLESSServer] = field(default_factory=list)


def parse_account(node: Node, inbound: bool) -> VLESSAccount:
    """One ``clients[]`` (inbound) or ``users[]`` (outbound) entry."""
    text = node.str("id")
    try:
        raw = parse_uuid(text)
    except ValueError:
        raise node.error(f"expected a UUID, got {text!r}", "id") from None
    level = node.int("level", 0, 0)
    email = node.str("email", "")
    flow = node.str("flow", "")
    if flow:
        node.get("flow").warn(f"flow {flow!r} is ignored, as V2Ray 4.34 ignores it "
                              "(no XTLS: vtwist sends and reads no addons)")
    encryption = node.str("encryption", "")
    if inbound and encryption:
        raise node.error('"encryption" should not be in inbound settings', "encryption")
    if not inbound and encryption != "none":
        raise node.error('expected "none" (add "encryption": "none" to every user)',
                         "encryption")
    node.warn_unknown(("alterId", "security"))
    return VLESSAccount(raw, level, email, flow)


def parse_inbound_settings(node: Node) -> VLESSInboundSettings:
    """Validate ``clients``, ``decryption``, ``fallbacks``."""
    node = node.or_empty()
    settings = VLESSInboundSettings()
    clients = node.get("clients", [])
    settings.clients = [parse_account(c, True) for c in clients.items()]
    emails: dict[str, str] = {}
    ids: dict[bytes, str] = {}
    for account, item in zip(settings.clients, clients.items(), strict=True):
        if account.email:
            key = account.email.lower()
            if key in emails:
                raise item.error(f"user {account.email!r} already exists (at {emails[key]})",
                                 "email")
            emails[key] = item.path
        if account.uuid in ids:
            item.warn(f"duplicate client id (also at {ids[account.uuid]}); the last one wins")
        ids[account.uuid] = item.path
    decryption = node.get("decryption", "")
    if decryption.value != "none":
        raise decryption.error('expected "none" (add "decryption": "none" to the settings)')
    if node.has("fallback"):
        raise node.error('use "fallbacks": [{...}] instead of "fallback": {...}', "fallback")
    settings.fallbacks = parse_fallbacks(node.get("fallbacks", None))
    node.warn_unknown()
    return settings


def parse_outbound_settings(node: Node) -> VLESSOutboundSettings:
    """Validate ``vnext[]``: ``address``, ``port``, ``users[]``."""
    settings = VLESSOutboundSettings()
    vnext = node.get("vnext")
    for server in vnext.items():
        address = server.str("address")
        if not address:
            raise server.error("must not be empty", "address")
        port = server.port("port")
        users_node = server.get("users")
        users = [parse_account(u, False) for u in users_node.items()]
        if not users:
            raise users_node.error("expected at least one user")
        server.warn_unknown()
        settings.servers.append(VLESSServer(address.strip("[]"), port, users))
    if not settings.servers:
        raise vnext.error("expected at least one server")
    node.warn_unknown()
    return settings


outbound = OutboundSpec("vless", parse_outbound_settings,
                        "vtwist.proxy.vless.outbound:build_outbound")
