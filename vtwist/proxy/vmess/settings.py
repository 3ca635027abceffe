"""VMess settings as V2Ray's JSON has them: accounts, inbound and outbound ``settings``,
and the outbound's registry entry (no Twisted here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node
from vtwist.config.registry import OutboundSpec
from vtwist.proxy.vmess.body import DEFAULT_SEND_CHUNK, MAX_CHUNK, MAX_SEND_CHUNK
from vtwist.proxy.vmess.ids import parse_uuid
from vtwist.proxy.vmess.users import Account


@dataclass
class VMessInboundSettings:
    """Validated ``settings`` of a vmess inbound.

    ``legacyHeader`` (vtwist extension, default true like 4.34) switches the MD5/CFB
    legacy header off when false: only AEAD headers are accepted then.
    """

    clients: list[Account] = field(default_factory=list)
    disable_insecure: bool = False
    legacy: bool = True
    #: ``default``: level and alterId of clients without them, and of the accounts a
    #: dynamic-port inbound makes up for a detour
    default_level: int = 0
    default_alter_id: int = 0
    #: ``detour.to`` (or ``features.detour.to``): the tag of the dynamic-port inbound whose
    #: port and account the response offers the client ("" = no detour)
    detour: str = ""


def parse_account(node: Node, default_level: int = 0, default_alter: int = 0,
                  with_security: bool = False) -> Account:
    """One ``clients[]`` / ``users[]`` entry."""
    text = node.str("id")
    try:
        raw = parse_uuid(text)
    except ValueError:
        raise node.error(f"expected a UUID, got {text!r}", "id") from None
    alter = node.int("alterId", default_alter, 0, 65535)
    level = node.int("level", default_level, 0)
    email = node.str("email", "")
    # V2Ray's account JSON has "security" for inbound clients too (unused there).
    security = node.str("security", "auto", lower=True)
    if not with_security:
        security = "auto"
    node.has("experiments")
    node.has("testsEnabled")
    node.warn_unknown()
    return Account(raw, alter, level, email, security)


def parse_inbound_settings(node: Node) -> VMessInboundSettings:
    """Validate ``clients``, ``default``, ``disableInsecureEncryption``, ``legacyHeader``."""
    settings = VMessInboundSettings()
    if node.value is None:
        return settings
    default_level, default_alter = 0, 0
    if node.has("default"):
        d = node.get("default")
        default_level = d.int("level", 0, 0)
        default_alter = d.int("alterId", 0, 0, 65535)
        d.warn_unknown()
    settings.default_level, settings.default_alter_id = default_level, default_alter
    clients = node.get("clients", [])
    settings.clients = [parse_account(c, default_level, default_alter) for c in clients.items()]
    seen: dict[bytes, str] = {}
    for c, item in zip(settings.clients, clients.items(), strict=True):
        if c.uuid in seen:
            item.warn(f"duplicate client id (also at {seen[c.uuid]})")
        seen.setdefault(c.uuid, item.path)
    settings.disable_insecure = node.bool("disableInsecureEncryption", False)
    settings.legacy = node.bool("legacyHeader", True)
    detour = node.get("detour", None)
    if detour.value is None and node.has("features"):
        detour = node.get("features", {}).get("detour", None)
    if detour.value is not None:
        settings.detour = detour.str("to", "")
        detour.warn_unknown()
    node.has("features")  # 4.34 reads only its detour, and only without a top-level one
    node.warn_unknown()
    return settings


@dataclass
class VMessServer:
    """One ``vnext[]`` entry."""

    address: str
    port: int
    users: list[Account] = field(default_factory=list)


@dataclass
class VMessOutboundSettings:
    """Validated ``settings`` of a vmess outbound.

    ``chunk_size`` (vtwist's own ``chunkSize``): the largest request chunk sent, length
    field, sealed payload and padding together; 16384 by default, 2048 is V2Ray's writer.
    """

    servers: list[VMessServer] = field(default_factory=list)
    chunk_size: int = DEFAULT_SEND_CHUNK


def parse_outbound_settings(node: Node) -> VMessOutboundSettings:
    """Validate ``vnext[]``: ``address``, ``port``, ``users[]`` (id, alterId, security...);
    vtwist's ``chunkSize`` (2048..16384)."""
    settings = VMessOutboundSettings()
    vnext = node.get("vnext")
    for server in vnext.items():
        address = server.str("address")
        if not address:
            raise server.error("must not be empty", "address")
        port = server.port("port")
        users_node = server.get("users")
        users = [parse_account(u, with_security=True) for u in users_node.items()]
        if not users:
            raise users_node.error("expected at least one user")
        server.warn_unknown()
        settings.servers.append(VMessServer(address.strip("[]"), port, users))
    if not settings.servers:
        raise vnext.error("expected at least one server")
    settings.chunk_size = node.int("chunkSize", DEFAULT_SEND_CHUNK, MAX_CHUNK, MAX_SEND_CHUNK)
    node.warn_unknown()
    return settings


outbound = OutboundSpec("vmess", parse_outbound_settings,
                        "vtwist.proxy.vmess.outbound:build_outbound")
