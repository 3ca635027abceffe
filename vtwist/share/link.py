"""``vmess://`` share links: the :class:`VmessLink` model and its two textual forms.

Two link forms are read:

* the v2rayN "v2" form: ``vmess://`` + base64 of a JSON object with the fields ``v ps add
  port id aid scy net type host path tls sni alpn fp`` (values as strings or numbers; the
  base64 may be URL-safe and may lack padding);
* the URL form: ``vmess://uuid@host:port?type=ws&security=tls&path=...#name`` (``type`` is
  the network, ``headerType`` the disguise, ``encryption`` the VMess security).

A link maps to an outbound dict exactly as v2rayN maps it to a V2Ray 4.34 config (``net``
-> ``streamSettings.network``; ``type``/``host``/``path`` -> the network's settings, as its
registry entry's link fields say; ``tls``, ``sni``, ``alpn`` -> ``tlsSettings``), and
:func:`vtwist.share.outbound.outbound_to_link` maps it back:
``outbound_to_link(link.to_outbound()) == link.canonical()`` for every supported link.

Malformed input raises :class:`LinkError`, whose message is one line naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from vtwist.share import fields
from vtwist.share.errors import LinkError
from vtwist.share.stream import Stream
from vtwist.share.url import join_url, split_url

SCHEME = "vmess://"


@dataclass(frozen=True)
class VmessLink:
    """One share link's fields, typed. ``net``/``type``/``scy`` are lower-cased aliases."""

    add: str
    port: int
    id: str
    ps: str = ""
    aid: int = 0
    scy: str = "auto"
    net: str = "tcp"
    type: str = "none"
    host: str = ""
    path: str = ""
    tls: str = ""
    sni: str = ""
    alpn: str = ""
    fp: str = ""
    allow_insecure: bool = False
    v: str = "2"

    @property
    def stream(self) -> Stream:
        """The link's transport fields."""
        return Stream(net=self.net, type=self.type, host=self.host, path=self.path,
                      tls=self.tls, sni=self.sni, alpn=self.alpn,
                      allow_insecure=self.allow_insecure, fp=self.fp)

    # -- canonical form ---------------------------------------------------
    def canonical(self) -> VmessLink:
        """The same link with fields that carry no meaning for its transport cleared.

        Raises :class:`UnsupportedTransportError` for h2/quic/grpc.
        """
        stream = self.stream.canonical()
        return replace(self, v="2", type=stream.type, host=stream.host, path=stream.path,
                       sni=stream.sni, alpn=stream.alpn,
                       allow_insecure=stream.allow_insecure, fp="")

    def ignored(self) -> list[str]:
        """Notes on fields this link sets that its outbound cannot use (for warnings)."""
        return self.stream.ignored()

    # -- outbound ----------------------------------------------------------
    def to_outbound(self, tag: str | None = None) -> dict[str, Any]:
        """The V2Ray 4.34 outbound dict (``tag`` defaults to ``ps``; omitted when empty)."""
        link = self.canonical()
        outbound: dict[str, Any] = {"protocol": "vmess"}
        tag = link.ps if tag is None else tag
        if tag:
            outbound["tag"] = tag
        outbound["settings"] = {"vnext": [{
            "address": link.add,
            "port": link.port,
            "users": [{"id": link.id, "alterId": link.aid, "security": link.scy, "level": 0}],
        }]}
        outbound["streamSettings"] = link.stream.to_settings()
        return outbound

    # -- emitting ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The v2 JSON object (all values strings, as v2rayN writes them)."""
        data: dict[str, Any] = {
            "v": self.v, "ps": self.ps, "add": self.add, "port": str(self.port), "id": self.id,
            "aid": str(self.aid), "scy": self.scy, "net": self.net, "type": self.type,
            "host": self.host, "path": self.path, "tls": self.tls, "sni": self.sni,
            "alpn": self.alpn, "fp": self.fp,
        }
        if self.allow_insecure:
            data["allowInsecure"] = True
        return data

    def to_link(self) -> str:
        """The base64 v2 form: ``vmess://`` + base64(JSON)."""
        text = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        return SCHEME + base64.b64encode(text.encode("utf-8")).decode("ascii")

    def to_url(self) -> str:
        """The URL form ``vmess://uuid@host:port?type=...#name`` (VMess AEAD: ``aid`` 0)."""
        link = self.canonical()
        if link.aid:
            raise LinkError("aid", "the URL form has no alterId (it is VMess AEAD only); "
                                   "use the base64 form")
        query: dict[str, str] = {"type": link.net, "encryption": link.scy}
        query.update(link.stream.to_query("net"))
        return join_url("vmess", link.id, link.add, link.port, query, link.ps)

    @property
    def name(self) -> str:
        """``ps``, or ``add:port`` when the link has no name."""
        return self.ps or f"{self.add}:{self.port}"


# -- parsing ---------------------------------------------------------------------
def link_from_json(data: Any) -> VmessLink:
    """Build a :class:`VmessLink` from a decoded v2 JSON object."""
    if not isinstance(data, dict):
        raise LinkError("body", f"expected a JSON object, got {type(data).__name__}")
    text = fields.text
    net = fields.network(text(data, "net").strip(), "net")
    insecure_key = next((k for k in ("allowInsecure", "allowinsecure", "insecure",
                                     "skip-cert-verify") if k in data), None)
    return VmessLink(
        v=text(data, "v", "2").strip() or "2",
        ps=text(data, "ps"),
        add=fields.address(text(data, "add"), "add"),
        port=fields.integer(data, "port", 1, 65535, True, "port"),
        id=fields.user_id(text(data, "id").strip(), "id"),
        aid=fields.integer(data, "aid", 0, 65535, False, "alterId"),
        scy=fields.security(text(data, "scy").strip(), "scy"),
        net=net,
        type=fields.header(net, text(data, "type").strip(), "type"),
        host=text(data, "host"),
        path=text(data, "path"),
        tls=fields.tls(text(data, "tls").strip(), "tls"),
        sni=text(data, "sni"),
        alpn=text(data, "alpn"),
        fp=text(data, "fp"),
        allow_insecure=fields.boolean(data.get(insecure_key), insecure_key)
        if insecure_key else False,
    )


def _parse_base64_form(body: str) -> VmessLink:
    try:
        raw = fields.b64decode(body)
    except (binascii.Error, ValueError):
        if fields.b64_truncated(body):
            raise LinkError("body", f"base64 ends in the middle of a byte: "
                                    f"{fields.TRUNCATED_HINT}") from None
        raise LinkError("body", "not valid base64 (expected vmess:// followed by base64 of "
                                "a JSON object, or vmess://uuid@host:port?...)") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LinkError("body", "base64 does not decode to UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if fields.json_truncated(text, e.pos, e.msg):
            raise LinkError("body", f"its JSON ends early: {fields.TRUNCATED_HINT}") from None
        raise LinkError("body", f"not valid JSON after base64 decoding: {e.msg} "
                                f"(column {e.colno})") from None
    except RecursionError:
        raise LinkError("body", "not valid JSON after base64 decoding: nested too "
                                "deeply") from None
    return link_from_json(data)


def _parse_url_form(body: str) -> VmessLink:
    parts = split_url(body, "add")
    query = parts.query
    userinfo = unquote(parts.userinfo)
    data: dict[str, Any] = {"add": parts.host, "port": parts.port, "ps": parts.name}
    if ":" in userinfo:
        # v2rayN's variant: vmess://net[+tls]:uuid@host:port?type=<header>&path=...
        net_part, _, data["id"] = userinfo.partition(":")
        net, _, tls = net_part.partition("+")
        data.update(net=net, tls=tls, type=query.get("type", ""), host=query.get("host", ""),
                    path=query.get("path", ""))
        return link_from_json(data)
    stream = Stream.from_query(query)
    data.update(id=userinfo, scy=query.get("encryption", ""),
                aid=query.get("alterId", query.get("aid", "")))
    try:
        return replace(link_from_json(data), **{
            name: getattr(stream, name) for name in (
                "net", "type", "host", "path", "tls", "sni", "alpn", "allow_insecure", "fp")})
    except LinkError as e:
        if e.field == "scy":
            raise LinkError("encryption", e.message) from None
        raise


def parse_link(link: str) -> VmessLink:
    """Parse a ``vmess://`` link in either form. Raises :class:`LinkError`."""
    if not isinstance(link, str):
        raise LinkError("link", f"expected text, got {type(link).__name__}")
    text = link.strip()
    if not text:
        raise LinkError("link", "is empty")
    scheme, sep, body = text.partition("://")
    if not sep:
        raise LinkError("scheme", "expected a link starting with vmess://")
    if scheme.lower() != "vmess":
        raise LinkError("scheme", f"expected vmess://, got {scheme}://")
    if not body:
        raise LinkError("body", "nothing after vmess://")
    if "@" in body.partition("?")[0].partition("#")[0]:
        return _parse_url_form(body)
    return _parse_base64_form(body.partition("#")[0].partition("?")[0])

