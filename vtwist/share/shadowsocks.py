"""``ss://`` share links (Shadowsocks), in the three forms clients write:

* SIP002 with base64url userinfo: ``ss://base64url(method:password)@host:port/?plugin=#name``;
* SIP002 with percent-encoded userinfo: ``ss://method:password@host:port#name``;
* the legacy all-base64 form: ``ss://base64(method:password@host:port)#name``.

Only the ciphers V2Ray 4.34 has are accepted (AEAD ``aes-128-gcm``, ``aes-256-gcm``,
``chacha20-ietf-poly1305`` and their aliases, and ``none``); SIP003 plugins need an external
program, so a link with one is refused as unsupported. A link maps to V2Ray 4.34's
``shadowsocks`` outbound (``servers[0]``, plain tcp); :func:`outbound_to_link` maps it back.
Links are written in the base64url SIP002 form.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from vtwist.share import fields
from vtwist.share.errors import LinkError, UnsupportedLinkError, Warn, relabel
from vtwist.share.url import (
    join_url,
    link_body,
    parse_query,
    server,
    split_host_port,
    split_url,
)

SCHEME = "ss"
WHAT = "invalid ss link"
SHAPE = "base64url(method:password)@host:port#name"

#: Every cipher spelling V2Ray 4.34 accepts -> the SIP spelling links use.
METHODS = {
    "aes-128-gcm": "aes-128-gcm", "aead_aes_128_gcm": "aes-128-gcm",
    "aes-256-gcm": "aes-256-gcm", "aead_aes_256_gcm": "aes-256-gcm",
    "chacha20-ietf-poly1305": "chacha20-ietf-poly1305",
    "chacha20-poly1305": "chacha20-ietf-poly1305",
    "aead_chacha20_poly1305": "chacha20-ietf-poly1305",
    "none": "none", "plain": "none",
}
#: A link's cipher -> V2Ray 4.34's own name for it in the outbound JSON.
V2RAY_NAMES = {"chacha20-ietf-poly1305": "chacha20-poly1305"}
SUPPORTED = "aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305 (chacha20-poly1305), none"


def method(value: str, key: str) -> str:
    """The SIP spelling of a cipher V2Ray 4.34 has; UnsupportedLinkError for the others."""
    name = value.strip().lower()
    if not name:
        raise LinkError(key, f"is missing (the cipher: {SUPPORTED})")
    if name not in METHODS:
        raise UnsupportedLinkError(key, f"cipher {value.strip()!r} is not supported by "
                                        f"V2Ray 4.34 or vtwist (supported: {SUPPORTED})")
    return METHODS[name]


@dataclass(frozen=True)
class ShadowsocksLink:
    """One ``ss://`` link: the server, the cipher (SIP spelling), the password, the name."""

    address: str
    port: int
    method: str
    password: str
    remark: str = ""

    @property
    def name(self) -> str:
        """``remark``, or ``address:port`` when the link has none."""
        return self.remark or f"{self.address}:{self.port}"

    def canonical(self) -> ShadowsocksLink:
        """The link with its cipher in the SIP spelling."""
        try:
            return replace(self, method=method(self.method, "method"))
        except LinkError as e:
            raise relabel(e, WHAT) from None

    def ignored(self) -> list[str]:
        """Nothing in an ss link goes unused."""
        return []

    def to_outbound(self, tag: str | None = None) -> dict[str, Any]:
        """V2Ray 4.34's ``shadowsocks`` outbound (``tag`` defaults to the name)."""
        link = self.canonical()
        outbound: dict[str, Any] = {"protocol": "shadowsocks"}
        tag = link.remark if tag is None else tag
        if tag:
            outbound["tag"] = tag
        outbound["settings"] = {"servers": [{
            "address": link.address, "port": link.port,
            "method": V2RAY_NAMES.get(link.method, link.method), "password": link.password,
            "level": 0,
        }]}
        return outbound

    def to_url(self) -> str:
        """The SIP002 form with base64url userinfo (unpadded)."""
        link = self.canonical()
        userinfo = base64.urlsafe_b64encode(
            f"{link.method}:{link.password}".encode()).decode("ascii").rstrip("=")
        return join_url(SCHEME, userinfo, link.address, link.port, None, link.remark)

    def to_link(self) -> str:
        """The SIP002 form."""
        return self.to_url()

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"address": self.address, "port": self.port, "method": self.method,
                "password": self.password, "name": self.remark}


def parse_link(text: str) -> ShadowsocksLink:
    """Parse an ``ss://`` link in any of its three forms. Raises :class:`LinkError`."""
    try:
        return _parse(text)
    except LinkError as e:
        raise relabel(e, WHAT) from None


def _decode(data: str, key: str) -> str:
    try:
        return fields.b64decode(unquote(data)).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise LinkError(key, "not base64 of UTF-8 text "
                                    f"(expected ss://{SHAPE})") from None


def _credentials(userinfo: str) -> tuple[str, str]:
    """(method, password) of a SIP002 userinfo, base64url or percent-encoded."""
    if ":" in userinfo:
        raw_method, _, raw_password = userinfo.partition(":")
        return unquote(raw_method), unquote(raw_password)
    decoded = _decode(userinfo, "userinfo")
    if ":" not in decoded:
        raise LinkError("userinfo", "expected method:password in the base64 userinfo")
    found, _, password = decoded.partition(":")
    return found, password


def _parse(text: str) -> ShadowsocksLink:
    body = link_body(text, SCHEME, SHAPE)
    rest, _, fragment = body.partition("#")
    rest, _, query_text = rest.partition("?")
    plugin = parse_query(query_text).get("plugin", "").strip()
    if "@" in rest:  # SIP002
        parts = split_url(body)
        found, password = _credentials(parts.userinfo)
        address, port = server(parts)
    else:  # legacy: ss://base64(method:password@host:port)#name
        decoded = _decode(rest.rstrip("/"), "body")
        credentials, at, hostport = decoded.rpartition("@")
        if not at or ":" not in credentials:
            raise LinkError("body", "expected base64 of method:password@host:port")
        found, _, password = credentials.partition(":")
        host, port_text = split_host_port(hostport.strip())
        address = fields.address(host, "address")
        port = fields.integer({"port": port_text}, "port", 1, 65535, True, "port")
    return _link(address, port, found, password, unquote(fragment), plugin)


def _link(address: str, port: int, found: str, password: str, name: str,
          plugin: str) -> ShadowsocksLink:
    cipher = method(found, "method")
    if not password:
        raise LinkError("password", "is missing")
    if plugin:
        raise UnsupportedLinkError("plugin", f"{plugin.partition(';')[0]!r}: SIP003 plugins "
                                             "are not supported by V2Ray 4.34 or vtwist")
    return ShadowsocksLink(address, port, cipher, password, name)


def outbound_to_link(outbound: dict[str, Any], warn: Warn) -> ShadowsocksLink:
    """The canonical link of a ``shadowsocks`` outbound (plain tcp only: an ss link has no
    transport); what a link cannot carry is dropped with a warning."""
    obj, text = fields.obj, fields.text
    outbound = obj(outbound, "outbound")
    settings = obj(outbound.get("settings"), "settings")
    target = fields.first(settings.get("servers"), "settings.servers", warn, "servers", SCHEME)
    path = "settings.servers[0]"
    password = text(target, "password")
    if not password:
        raise LinkError(f"{path}.password", "is missing (V2Ray 4.34 requires one)")
    fields.level(target, path, warn, SCHEME)
    stream = obj(outbound.get("streamSettings"), "streamSettings")
    network = fields.network(text(stream, "network"), "streamSettings.network")
    tls = fields.tls(text(stream, "security"), "streamSettings.security")
    header = obj(obj(stream.get("tcpSettings"), "streamSettings.tcpSettings").get("header"),
                 "streamSettings.tcpSettings.header")
    if network != "tcp" or tls or text(header, "type").lower() not in ("", "none"):
        raise LinkError("streamSettings", "an ss link carries no transport: only plain tcp "
                                          "(no TLS, no header) can be shared")
    fields.outbound_extras(outbound, warn, SCHEME)
    return ShadowsocksLink(
        address=fields.address(text(target, "address"), f"{path}.address"),
        port=fields.integer(target, "port", 1, 65535, True, "port"),
        method=method(text(target, "method"), f"{path}.method"),
        password=password,
        remark=text(outbound, "tag"),
    )
