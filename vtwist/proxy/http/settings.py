"""The ``http`` inbound's settings, as V2Ray 4.34 reads them (``infra/conf/http.go``,
``proxy/http/config.proto``): ``accounts`` [{user, pass}], ``allowTransparent``, ``timeout``
(deprecated: connIdle of level 0) and ``userLevel``. No Twisted here."""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node


@dataclass
class HttpInboundSettings:
    """Validated http inbound ``settings``."""

    #: user name -> password; empty means no authentication
    accounts: dict[str, str] = field(default_factory=dict)
    allow_transparent: bool = False
    timeout: int = 0  # deprecated V2Ray field: connIdle override for level 0
    user_level: int = 0


def parse_inbound_settings(node: Node) -> HttpInboundSettings:
    """Validate ``settings`` of an http inbound.

    As in V2Ray, a later account with the same user replaces an earlier one. A user name
    with ``:`` could never match a Basic credential, so it is an error here.
    """
    settings = HttpInboundSettings()
    if node.value is None:
        return settings
    node.require_object()
    for account in node.get("accounts", []).items():
        user = account.str("user")
        if ":" in user:
            raise account.error("a user name may not contain ':' (Basic authentication)",
                                "user")
        if not user:
            raise account.error("expected a non-empty user name", "user")
        settings.accounts[user] = account.str("pass", "")
        account.warn_unknown()
    settings.allow_transparent = node.bool("allowTransparent", False)
    settings.timeout = node.int("timeout", 0, 0)
    if settings.timeout:
        node.warn("timeout is deprecated; use policy.levels.N.connIdle")
    settings.user_level = node.int("userLevel", 0, 0)
    node.warn_unknown()
    return settings
