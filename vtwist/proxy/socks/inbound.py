"""The ``socks`` inbound: V2Ray's settings, and the registry hook that builds the factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vtwist.address import is_valid_domain, normalize_host, parse_ip
from vtwist.config.node import Node
from vtwist.config.registry import InboundSpec

AUTH_METHODS = ("noauth", "password")


@dataclass
class SocksSettings:
    """Validated socks inbound ``settings``."""

    auth: str = "noauth"
    accounts: dict[str, str] = field(default_factory=dict)
    udp: bool = False
    ip: str | None = None
    user_level: int = 0
    timeout: int = 0  # deprecated V2Ray field: connIdle override for level 0


def parse_inbound_settings(node: Node) -> SocksSettings:
    """Validate ``settings`` of a socks inbound: auth, accounts, udp, ip, userLevel (timeout).

    Unlike V2Ray, an unknown ``auth`` is an error rather than a silent fall back to an open
    proxy, and ``"password"`` needs at least one account.
    """
    settings = SocksSettings()
    if node.value is None:
        return settings
    node.require_object()
    settings.auth = node.str("auth", "noauth", choices=AUTH_METHODS, lower=True)
    for account in node.get("accounts", []).items():
        user = account.str("user")
        password = account.str("pass", "")
        if not 0 < len(user.encode()) <= 255:
            raise account.error("expected a user name of 1-255 bytes", "user")
        if len(password.encode()) > 255:
            raise account.error("expected a password of at most 255 bytes", "pass")
        settings.accounts[user] = password
        account.warn_unknown()
    if settings.auth == "password" and not settings.accounts:
        raise node.error('at least one account is required when auth is "password"',
                         "accounts")
    settings.udp = node.bool("udp", False)
    ip = node.str("ip", "")
    if ip:
        if parse_ip(ip) is None and not is_valid_domain(ip):
            raise node.error(f"expected an IP address, got {ip!r}", "ip")
        settings.ip = normalize_host(ip)
    settings.user_level = node.int("userLevel", 0, 0)
    settings.timeout = node.int("timeout", 0, 0)
    if settings.timeout:
        node.warn("timeout is deprecated; use policy.levels.N.connIdle")
    node.warn_unknown()
    return settings


def build_inbound_factory(inbound: Any, ctx: Any) -> Any:
    """Registry hook: a :class:`~vtwist.proxy.socks.server.SocksServerFactory`."""
    from vtwist.proxy.socks.server import SocksServerFactory

    settings: SocksSettings = inbound.settings or SocksSettings()
    policy = ctx.policy.inbound_level(settings.user_level, settings.timeout)
    accounts = None
    if settings.auth == "password":
        accounts = {u.encode(): p.encode() for u, p in settings.accounts.items()}
    return SocksServerFactory(
        ctx.tunnels, tag=inbound.tag, accounts=accounts, udp=settings.udp,
        udp_address=settings.ip, listen=inbound.listen, policy=policy)


inbound = InboundSpec("socks", parse_inbound_settings, build_inbound_factory)
