"""Outbound JSON <-> share link, for every scheme, and finding the outbound in a config.

:func:`link_to_outbound` and :func:`outbound_to_link` dispatch through the scheme registry
(:mod:`vtwist.share.schemes`); :func:`outbound_to_link` is the inverse of a link's
``to_outbound``. What a network's ``*Settings`` mean as link fields comes from its registry
entry (:mod:`vtwist.transport.linkfields`). Settings a link cannot express are dropped with
a warning.
"""

from __future__ import annotations

from typing import Any

from vtwist.share import fields, schemes
from vtwist.share.errors import LinkError, Warn, default_warn
from vtwist.share.schemes import ShareLink

CANNOT_ENCODE = "cannot make a link"


def link_to_outbound(link: str, tag: str | None = None) -> dict[str, Any]:
    """Parse a link of any scheme and return its outbound dict."""
    return schemes.parse_link(link).to_outbound(tag)


def outbound_to_link(outbound: dict[str, Any], warn: Warn | None = None) -> ShareLink:
    """The link for an outbound dict (vmess, vless, trojan or shadowsocks).

    Settings a link cannot express are dropped with a warning through ``warn``.
    """
    return schemes.outbound_to_link(outbound, warn or default_warn)


def _has_link(outbound: Any) -> bool:
    return isinstance(outbound, dict) and schemes.for_protocol(
        str(outbound.get("protocol", ""))) is not None


def find_outbound(config: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    """The outbound tagged ``tag`` in a full config, else its first one that has a link."""
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
        if _has_link(ob):
            return ob
    protocols = ", ".join(s.protocol for s in schemes.SCHEMES)
    raise LinkError("outbounds", f"the config has no outbound with a share link ({protocols})",
                    CANNOT_ENCODE)


#: what a server inbound's protocol becomes as the outbound its clients use
_SERVER_PROTOCOLS = ("vmess", "vless", "trojan", "shadowsocks")


def find_server_inbound(config: dict[str, Any], tag: str | None = None) -> dict[str, Any] | None:
    """The inbound tagged ``tag`` (else the first) whose protocol has a share link
    (a server config: vmess, vless, trojan, shadowsocks); None when there is none."""
    inbounds = fields.obj(config, "config").get("inbounds")
    if not isinstance(inbounds, list):
        return None
    for ib in inbounds:
        if not isinstance(ib, dict) or str(ib.get("protocol", "")).lower() not in \
                _SERVER_PROTOCOLS:
            continue
        if tag is None or ib.get("tag") == tag:
            return ib
    return None


def _server_port(value: Any) -> int:
    text = str(value).split(",")[0].split("-")[0].strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise LinkError("inbounds.port", f"expected a port number, got {value!r}", CANNOT_ENCODE)
    return int(text)


def _client_stream(stream: Any, warn: Warn) -> dict[str, Any] | None:
    """The client's streamSettings for a server's: the same network settings; TLS without
    the certificates (an inline certificate is taken for a self-signed one:
    ``allowInsecure``, with a warning)."""
    if not isinstance(stream, dict):
        return None
    client = {k: v for k, v in stream.items() if k not in ("tlsSettings", "sockopt")}
    tls = stream.get("tlsSettings")
    if str(stream.get("security", "")).lower() == "tls":
        server_tls = tls if isinstance(tls, dict) else {}
        out: dict[str, Any] = {k: server_tls[k] for k in ("serverName", "alpn")
                               if k in server_tls}
        certs = server_tls.get("certificates") or []
        if certs and all(isinstance(c, dict) and "certificateFile" not in c for c in certs):
            out["allowInsecure"] = True
            warn("the server's certificate is inline (taken as self-signed), so the link "
                 "sets allowInsecure")
        client["tlsSettings"] = out
    return client


def inbound_to_outbound(inbound: dict[str, Any], address: str,
                        warn: Warn | None = None) -> dict[str, Any]:
    """The outbound a client uses to reach the server ``inbound`` (its first user) at
    ``address``: what ``link encode --config server.json`` turns into a link."""
    warn = warn or default_warn
    protocol = str(inbound.get("protocol", "")).lower()
    settings = inbound.get("settings") if isinstance(inbound.get("settings"), dict) else {}
    port = _server_port(inbound.get("port"))
    if protocol == "shadowsocks":
        server = {"address": address, "port": port, "method": settings.get("method"),
                  "password": settings.get("password")}
        out_settings: dict[str, Any] = {"servers": [server]}
    else:
        clients = settings.get("clients")
        if not isinstance(clients, list) or not clients or not isinstance(clients[0], dict):
            raise LinkError("inbounds.settings.clients", "the server has no clients",
                            CANNOT_ENCODE)
        first = clients[0]
        if len(clients) > 1:
            warn(f"the server has {len(clients)} clients; the link is the first one's")
        if protocol == "trojan":
            out_settings = {"servers": [{"address": address, "port": port,
                                         "password": first.get("password")}]}
        else:
            user: dict[str, Any] = {"id": first.get("id")}
            if protocol == "vmess":
                user.update(alterId=first.get("alterId", 0), security="auto")
            else:
                user["encryption"] = "none"
            out_settings = {"vnext": [{"address": address, "port": port, "users": [user]}]}
    tag = str(inbound.get("tag") or protocol)
    tag = tag[:-3] if tag.endswith("-in") and len(tag) > 3 else tag  # a client's name for it
    outbound: dict[str, Any] = {"protocol": protocol, "tag": tag, "settings": out_settings}
    stream = _client_stream(inbound.get("streamSettings"), warn)
    if stream is not None:
        outbound["streamSettings"] = stream
    return outbound
