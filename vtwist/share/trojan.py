"""``trojan://`` share links: ``trojan://password@host:port?security=tls&sni=&type=&path=
&host=&headerType=&alpn=#name`` (the trojan-gfw/v2rayN/Xray form).

TLS is on unless the link says ``security=none``; ``peer`` is read as an old spelling of
``sni`` and trojan-go's ``type=original`` as tcp. A link maps to V2Ray 4.34's ``trojan``
outbound (``servers[0]``) and its transport through :class:`vtwist.share.stream.Stream`;
:func:`outbound_to_link` maps it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from vtwist.share import fields
from vtwist.share.errors import LinkError, UnsupportedLinkError, Warn, relabel
from vtwist.share.stream import Stream, StreamLink
from vtwist.share.url import join_url, link_body, quote_component, server, split_url

SCHEME = "trojan"
WHAT = "invalid trojan link"
SHAPE = "password@host:port?sni=...#name"


@dataclass(frozen=True)
class TrojanLink(StreamLink):
    """One ``trojan://`` link: the server, the password, the name and the transport."""

    protocol = "trojan"
    what = WHAT

    address: str
    port: int
    password: str
    remark: str = ""
    stream: Stream = field(default_factory=lambda: Stream(tls="tls"))

    def server_settings(self) -> dict[str, Any]:
        """``servers[0]`` with the password."""
        return {"servers": [{"address": self.address, "port": self.port,
                             "password": self.password, "level": 0}]}

    def to_url(self) -> str:
        """``trojan://password@host:port?type=...&security=tls&sni=...#name``."""
        link = self.canonical()
        return join_url(SCHEME, quote_component(link.password), link.address, link.port,
                        link.stream.to_query(), link.remark)

    def to_link(self) -> str:
        """The URL form (trojan links have no other)."""
        return self.to_url()

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"address": self.address, "port": self.port, "password": self.password,
                "name": self.remark, **self.stream.to_json()}


def parse_link(text: str) -> TrojanLink:
    """Parse a ``trojan://`` link. Raises :class:`LinkError` naming the field."""
    try:
        return _parse(text)
    except LinkError as e:
        raise relabel(e, WHAT) from None


def _parse(text: str) -> TrojanLink:
    parts = split_url(link_body(text, SCHEME, SHAPE))
    password = unquote(parts.userinfo)
    if not parts.has_userinfo or not password:
        raise LinkError("password", f"is missing (trojan://{SHAPE})")
    address, port = server(parts)
    query = dict(parts.query)
    if query.get("type", "").strip().lower() == "original":  # trojan-go's name for tcp
        query["type"] = "tcp"
    for key in ("encryption", "plugin"):  # trojan-go's extra layers
        value = query.get(key, "").strip()
        if value and value.lower() != "none":
            raise UnsupportedLinkError(key, f"{value!r} (a trojan-go extension) is not "
                                            "supported by V2Ray 4.34 or vtwist")
    stream = Stream.from_query(query, default_tls="tls", sni_keys=("sni", "peer"))
    return TrojanLink(address, port, password, parts.name, stream)


def outbound_to_link(outbound: dict[str, Any], warn: Warn) -> TrojanLink:
    """The canonical link of a ``trojan`` outbound; what a link cannot carry is dropped
    with a warning."""
    obj, text = fields.obj, fields.text
    outbound = obj(outbound, "outbound")
    settings = obj(outbound.get("settings"), "settings")
    target = fields.first(settings.get("servers"), "settings.servers", warn, "servers", SCHEME)
    path = "settings.servers[0]"
    password = text(target, "password")
    if not password:
        raise LinkError(f"{path}.password", "is missing (V2Ray 4.34 requires one)")
    fields.level(target, path, warn, SCHEME)
    stream = Stream.from_settings(outbound.get("streamSettings"), warn, SCHEME)
    fields.outbound_extras(outbound, warn, SCHEME)
    return TrojanLink(
        address=fields.address(text(target, "address"), f"{path}.address"),
        port=fields.integer(target, "port", 1, 65535, True, "port"),
        password=password,
        remark=text(outbound, "tag"),
        stream=stream,
    )
