"""Outbound JSON <-> share link: the VMess outbound a link stands for, and back.

:func:`outbound_to_link` is the inverse of :meth:`VmessLink.to_outbound`; what a network's
``*Settings`` mean as link fields comes from its registry entry
(:mod:`vtwist.transport.linkfields`). Settings a link cannot express are dropped with a
warning.
"""

from __future__ import annotations

from typing import Any

from vtwist.share import fields
from vtwist.share.errors import LinkError, UnsupportedTransportError, Warn, default_warn
from vtwist.share.fields import join_list
from vtwist.share.link import VmessLink, parse_link
from vtwist.transport import registry
from vtwist.transport.linkfields import LinkFieldError

CANNOT_ENCODE = "cannot make a vmess link"


def link_to_outbound(link: str, tag: str | None = None) -> dict[str, Any]:
    """Parse ``link`` and return its outbound dict."""
    return parse_link(link).to_outbound(tag)


def _first(value: Any, path: str, warn: Warn, what: str) -> dict[str, Any]:
    if not isinstance(value, list) or not value:
        raise LinkError(path, f"expected a non-empty array of {what}")
    if len(value) > 1:
        warn(f"{path}: a vmess link holds one {what[:-1]}; using the first of {len(value)}")
    return fields.obj(value[0], f"{path}[0]")


def outbound_to_link(outbound: dict[str, Any], warn: Warn | None = None) -> VmessLink:
    """The link for a VMess outbound dict (the inverse of :meth:`VmessLink.to_outbound`).

    Settings a link cannot express are dropped with a warning through ``warn``.
    """
    try:
        return _outbound_to_link(outbound, warn or default_warn)
    except UnsupportedTransportError:
        raise
    except LinkFieldError as e:
        raise LinkError(e.field, e.message, CANNOT_ENCODE) from None


def _outbound_to_link(outbound: dict[str, Any], warn: Warn) -> VmessLink:
    obj, text = fields.obj, fields.text
    outbound = obj(outbound, "outbound")
    protocol = str(outbound.get("protocol", "")).lower()
    if protocol != "vmess":
        raise LinkError("protocol", f"only vmess outbounds have vmess links, got {protocol!r}")
    settings = obj(outbound.get("settings"), "settings")
    server = _first(settings.get("vnext"), "settings.vnext", warn, "servers")
    user = _first(server.get("users"), "settings.vnext[0].users", warn, "users")
    upath = "settings.vnext[0].users[0]"
    level = fields.integer(user, "level", 0, 2**32 - 1, False, "level")
    if level:
        warn(f"{upath}.level {level} cannot be carried by a vmess link; dropped")
    stream = obj(outbound.get("streamSettings"), "streamSettings")
    net = fields.network(text(stream, "network"), "streamSettings.network")
    link_fields = fields.network_fields(net)
    network = registry.lookup(net)
    if link_fields is None or network is None or not network.settings_key:
        raise UnsupportedTransportError(net, "streamSettings.network")
    tls = fields.tls(text(stream, "security"), "streamSettings.security")
    key = network.settings_key
    header, host, path = link_fields.from_settings(stream.get(key), f"streamSettings.{key}",
                                                   warn)
    sni, alpn, insecure = "", "", False
    if tls:
        tls_settings = obj(stream.get("tlsSettings"), "streamSettings.tlsSettings")
        sni = text(tls_settings, "serverName")
        alpn = join_list(fields.string_list(tls_settings.get("alpn"),
                                            "streamSettings.tlsSettings.alpn"))
        insecure = fields.boolean(tls_settings.get("allowInsecure"),
                                  "streamSettings.tlsSettings.allowInsecure")
        fields.drop_extra(tls_settings, ("serverName", "alpn", "allowInsecure"),
                          "streamSettings.tlsSettings", warn)
    if obj(outbound.get("mux"), "mux").get("enabled"):
        warn("mux cannot be carried by a vmess link; dropped")
    for extra in ("proxySettings", "sendThrough"):
        if extra in outbound:
            warn(f"{extra} cannot be carried by a vmess link; dropped")
    link = VmessLink(
        ps=text(outbound, "tag"),
        add=fields.address(text(server, "address"), "settings.vnext[0].address"),
        port=fields.integer(server, "port", 1, 65535, True, "port"),
        id=fields.user_id(text(user, "id"), f"{upath}.id"),
        aid=fields.integer(user, "alterId", 0, 65535, False, "alterId"),
        scy=fields.security(text(user, "security"), f"{upath}.security"),
        net=net, type=header, host=host, path=path, tls=tls, sni=sni, alpn=alpn,
        allow_insecure=insecure,
    )
    return link.canonical()


def find_outbound(config: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    """The outbound tagged ``tag`` in a full config, else its first VMess outbound."""
    outbounds = fields.obj(config, "config").get("outbounds")
    if not isinstance(outbounds, list) or not outbounds:
        raise LinkError("outbounds", "the config has no outbounds", CANNOT_ENCODE)
    if tag is not None:
        for ob in outbounds:
            if isinstance(ob, dict) and ob.get("tag") == tag:
                return ob
        tags = [str(ob.get("tag")) for ob in outbounds if isinstance(ob, dict) and ob.get("tag")]
        raise LinkError("--outbound", f"no outbound tagged {tag!r} "
                        f"(tags: {', '.join(tags) or 'none'})", CANNOT_ENCODE)
    for ob in outbounds:
        if isinstance(ob, dict) and str(ob.get("protocol", "")).lower() == "vmess":
            return ob
    raise LinkError("outbounds", "the config has no vmess outbound", CANNOT_ENCODE)
