"""``vless://`` share links: ``vless://uuid@host:port?type=&security=&sni=&path=&host=
&headerType=&seed=&encryption=none&flow=&alpn=#name`` (the Xray/v2rayN query-string form).

A link maps to V2Ray 4.34's ``vless`` outbound (``vnext[0].users[0]`` with
``encryption: "none"``) and its transport through :class:`vtwist.share.stream.Stream`;
:func:`outbound_to_link` maps it back. V2Ray 4.34 has no XTLS, so a ``flow`` (or
``security=xtls``/``reality``) is refused as unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from vtwist.share import fields
from vtwist.share.errors import LinkError, UnsupportedLinkError, Warn, relabel
from vtwist.share.stream import Stream, StreamLink
from vtwist.share.url import join_url, link_body, server, split_url

SCHEME = "vless"
WHAT = "invalid vless link"
SHAPE = "uuid@host:port?type=...#name"


@dataclass(frozen=True)
class VlessLink(StreamLink):
    """One ``vless://`` link: the server, the user id, the name and the transport."""

    protocol = "vless"
    what = WHAT

    address: str
    port: int
    id: str
    remark: str = ""
    stream: Stream = field(default_factory=Stream)

    def server_settings(self) -> dict[str, Any]:
        """``vnext[0].users[0]`` with the id and ``encryption: "none"``."""
        return {"vnext": [{"address": self.address, "port": self.port,
                           "users": [{"id": self.id, "encryption": "none", "level": 0}]}]}

    def to_url(self) -> str:
        """``vless://uuid@host:port?type=...&encryption=none&security=...#name``."""
        link = self.canonical()
        query = link.stream.to_query()
        query = {"type": query.pop("type"), "encryption": "none", **query}
        return join_url(SCHEME, link.id, link.address, link.port, query, link.remark)

    def to_link(self) -> str:
        """The URL form (vless links have no other)."""
        return self.to_url()

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"address": self.address, "port": self.port, "id": self.id,
                "name": self.remark, "encryption": "none", **self.stream.to_json()}


def parse_link(text: str) -> VlessLink:
    """Parse a ``vless://`` link. Raises :class:`LinkError` naming the field."""
    try:
        return _parse(text)
    except LinkError as e:
        raise relabel(e, WHAT) from None


def _parse(text: str) -> VlessLink:
    parts = split_url(link_body(text, SCHEME, SHAPE))
    if not parts.has_userinfo:
        raise LinkError("id", f"is missing (the user id, a UUID: vless://{SHAPE})")
    user_id = fields.user_id(unquote(parts.userinfo).strip(), "id")
    address, port = server(parts)
    _check_user(parts.query.get("encryption", ""), parts.query.get("flow", ""),
                "encryption", "flow")
    stream = Stream.from_query(parts.query)
    return VlessLink(address, port, user_id, parts.name, stream)


def _check_user(encryption: str, flow: str, encryption_key: str, flow_key: str) -> None:
    if encryption.strip().lower() not in ("", "none"):
        raise LinkError(encryption_key, f"VLESS has no encryption of its own; expected none, "
                                        f"got {encryption!r}")
    if flow.strip():
        raise UnsupportedLinkError(flow_key, f"flow {flow.strip()!r} is not supported by "
                                             "V2Ray 4.34 or vtwist (XTLS flows are Xray's; "
                                             "expected none)")


def outbound_to_link(outbound: dict[str, Any], warn: Warn) -> VlessLink:
    """The canonical link of a ``vless`` outbound; what a link cannot carry is dropped
    with a warning."""
    obj, text = fields.obj, fields.text
    outbound = obj(outbound, "outbound")
    settings = obj(outbound.get("settings"), "settings")
    vnext = fields.first(settings.get("vnext"), "settings.vnext", warn, "servers", SCHEME)
    user = fields.first(vnext.get("users"), "settings.vnext[0].users", warn, "users", SCHEME)
    upath = "settings.vnext[0].users[0]"
    if text(user, "encryption").lower() != "none":
        raise LinkError(f"{upath}.encryption", 'V2Ray 4.34 requires "none", got '
                                               f"{text(user, 'encryption')!r}")
    _check_user("none", text(user, "flow"), f"{upath}.encryption", f"{upath}.flow")
    fields.level(user, upath, warn, SCHEME)
    stream = Stream.from_settings(outbound.get("streamSettings"), warn, SCHEME)
    fields.outbound_extras(outbound, warn, SCHEME)
    return VlessLink(
        address=fields.address(text(vnext, "address"), "settings.vnext[0].address"),
        port=fields.integer(vnext, "port", 1, 65535, True, "port"),
        id=fields.user_id(text(user, "id"), f"{upath}.id"),
        remark=text(outbound, "tag"),
        stream=stream,
    )
