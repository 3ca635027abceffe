"""A VMess outbound dict -> its ``vmess://`` link (the inverse of
:meth:`vtwist.share.link.VmessLink.to_outbound`)."""

from __future__ import annotations

from typing import Any

from vtwist.share import fields
from vtwist.share.errors import LinkError, Warn
from vtwist.share.link import VmessLink
from vtwist.share.stream import Stream

SCHEME = "vmess"


def outbound_to_link(outbound: dict[str, Any], warn: Warn) -> VmessLink:
    """The canonical link of a VMess outbound; what a link cannot carry is dropped with a
    warning. Raises :class:`LinkError` (or its field-reader form) naming the key."""
    obj, text = fields.obj, fields.text
    outbound = obj(outbound, "outbound")
    protocol = str(outbound.get("protocol", "")).lower()
    if protocol != "vmess":
        raise LinkError("protocol", f"only vmess outbounds have vmess links, got {protocol!r}")
    settings = obj(outbound.get("settings"), "settings")
    server = fields.first(settings.get("vnext"), "settings.vnext", warn, "servers", SCHEME)
    user = fields.first(server.get("users"), "settings.vnext[0].users", warn, "users", SCHEME)
    upath = "settings.vnext[0].users[0]"
    fields.level(user, upath, warn, SCHEME)
    stream = Stream.from_settings(outbound.get("streamSettings"), warn, SCHEME)
    fields.outbound_extras(outbound, warn, SCHEME)
    link = VmessLink(
        ps=text(outbound, "tag"),
        add=fields.address(text(server, "address"), "settings.vnext[0].address"),
        port=fields.integer(server, "port", 1, 65535, True, "port"),
        id=fields.user_id(text(user, "id"), f"{upath}.id"),
        aid=fields.integer(user, "alterId", 0, 65535, False, "alterId"),
        scy=fields.security(text(user, "security"), f"{upath}.security"),
        net=stream.net, type=stream.type, host=stream.host, path=stream.path,
        tls=stream.tls, sni=stream.sni, alpn=stream.alpn,
        allow_insecure=stream.allow_insecure,
    )
    return link.canonical()
