"""What a share link's ``type``, ``host`` and ``path`` mean for each network (sans-IO).

A share link (``vmess://`` in both forms, ``vless://``, ``trojan://``) carries a network's
settings in three loose fields; the query-string forms name them ``headerType``, ``host``
and ``path`` (``seed`` for mKCP), as :meth:`LinkFields.to_query` and
:meth:`LinkFields.fields_from_query` say. Each network that links
can name has a :class:`LinkFields` (its registry entry's ``link_fields``) saying how those
fields map to and from its ``*Settings`` object, so the share-link code has no per-network
branches:

* tcp: ``type`` is the header disguise (none or http); with http, ``host`` and ``path`` are
  comma lists of the request's Host headers and paths;
* kcp: ``type`` is the mKCP header obfuscation, ``path`` is the seed, ``host`` means nothing;
* ws: ``host`` is the Host header, ``path`` the path, ``type`` means nothing.

Errors are :class:`LinkFieldError` naming the field; the share code turns them into its own
link errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vtwist.transport.kcp.obfs import HEADER_TYPES

Warn = Callable[[str], None]
#: (type, host, path) of a link.
Fields = tuple[str, str, str]


class LinkFieldError(ValueError):
    """A link field (or outbound key) that cannot be read; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# -- JSON helpers shared with vtwist.share ------------------------------------------------
def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (v2rayN's comma lists)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def join_list(items: list[str]) -> str:
    """The comma list for ``items``."""
    return ",".join(items)


def obj(value: Any, path: str) -> dict[str, Any]:
    """``value`` as a JSON object (None is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LinkFieldError(path, f"expected an object, got {type(value).__name__}")
    return value


def text(data: dict[str, Any], key: str, default: str = "") -> str:
    """``data[key]`` as text (numbers are accepted, as v2rayN writes some of them)."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise LinkFieldError(key, f"expected a string, got {json.dumps(value)}")
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str):
        raise LinkFieldError(key, f"expected a string, got {type(value).__name__}")
    return value


def string_list(value: Any, path: str) -> list[str]:
    """A string or a list of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise LinkFieldError(path, "expected a string or a list of strings")


def drop_extra(data: dict[str, Any], known: tuple[str, ...], path: str, warn: Warn) -> None:
    """Warn about each key of ``data`` a vmess link cannot carry."""
    for key in data:
        if key not in known:
            warn(f"{path}.{key} cannot be carried by a vmess link; dropped")


def _host_key(headers: dict[str, Any]) -> str | None:
    return next((k for k in headers if k.lower() == "host"), None)


# -- the networks' fields --------------------------------------------------------------------
class LinkFields:
    """A network whose link fields mean nothing; subclasses give them meaning."""

    #: The network's name in messages ("tcp", "mKCP", "ws").
    label = ""
    #: The values ``type`` may take; empty: the network has no header type.
    header_types: tuple[str, ...] = ()
    #: True when ``path`` is the network's seed (the URL form calls it ``seed``).
    path_is_seed = False
    #: True when a generated server should pick a random path when none is given.
    random_path = False

    def header(self, value: str, key: str) -> str:
        """``type`` validated (lower-cased, empty is none)."""
        return value.lower() or "none"

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """The fields with what carries no meaning cleared."""
        return "none", "", ""

    def sni(self, host: str) -> str:
        """The TLS server name a link's ``host`` implies when it gives no ``sni``."""
        return host

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """The network's ``*Settings`` object for canonical fields (None: leave it out)."""
        return None

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The canonical fields for a ``*Settings`` value found at ``where``."""
        return "none", "", ""

    def to_query(self, header: str, host: str, path: str) -> dict[str, str]:
        """The URL form's query items for canonical fields (in order)."""
        query: dict[str, str] = {}
        if host:
            query["host"] = host
        if path:
            query["path"] = path
        return query

    def path_from_query(self, query: dict[str, str]) -> str:
        """The link's ``path`` from the URL form's query."""
        return query.get("seed" if self.path_is_seed else "path", "")

    def fields_from_query(self, query: dict[str, str]) -> Fields:
        """(type, host, path) as the URL form's query gives them (the inverse of
        :meth:`to_query`; not validated): ``headerType``, ``host``, ``path`` or ``seed``."""
        return query.get("headerType", ""), query.get("host", ""), self.path_from_query(query)


class TCPLinkFields(LinkFields):
    """tcp: ``type`` none or http; with http, comma lists of Host headers and paths."""

    label = "tcp"
    header_types = ("none", "http")

    def header(self, value: str, key: str) -> str:
        """none or http."""
        header = value.lower() or "none"
        if header not in self.header_types:
            raise LinkFieldError(key, f"unknown tcp header type {value!r} (expected none or http)")
        return header

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """Host and path mean something only with the http header."""
        if header != "http":
            return "none", "", ""
        return header, join_list(split_list(host)), join_list(split_list(path))

    def sni(self, host: str) -> str:
        """The first Host header."""
        return split_list(host)[0]

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"header": {"type": "http", "request": ...}}``, or nothing without a header."""
        if header != "http":
            return None
        request: dict[str, Any] = {}
        if path:
            request["path"] = split_list(path)
        if host:
            request["headers"] = {"Host": split_list(host)}
        return {"header": {"type": "http", "request": request}}

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The header type, and with http the request's Host headers and paths."""
        tcp = obj(value, where)
        hdr = obj(tcp.get("header"), f"{where}.header")
        header = self.header(text(hdr, "type"), f"{where}.header.type")
        host = path = ""
        if header == "http":
            rpath = f"{where}.header.request"
            request = obj(hdr.get("request"), rpath)
            path = join_list(string_list(request.get("path"), f"{rpath}.path"))
            headers = obj(request.get("headers"), f"{rpath}.headers")
            host_key = _host_key(headers)
            if host_key:
                host = join_list(string_list(headers[host_key], f"{rpath}.headers.Host"))
            drop_extra(request, ("path", "headers"), rpath, warn)
            drop_extra(headers, (host_key or "Host",), f"{rpath}.headers", warn)
            drop_extra(hdr, ("type", "request"), f"{where}.header", warn)
        return header, host, path

    def to_query(self, header: str, host: str, path: str) -> dict[str, str]:
        """``headerType``, then host and path."""
        return {"headerType": header, **super().to_query(header, host, path)}


class KCPLinkFields(LinkFields):
    """kcp: ``type`` is the header obfuscation, ``path`` the seed."""

    label = "mKCP"
    header_types = tuple(HEADER_TYPES)  # none, srtp, utp, wechat-video, dtls, wireguard
    path_is_seed = True

    def header(self, value: str, key: str) -> str:
        """One of the mKCP header types."""
        header = value.lower() or "none"
        if header not in self.header_types:
            raise LinkFieldError(key, f"unknown mKCP header type {value!r} (expected one of "
                                      f"{', '.join(self.header_types)})")
        return header

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """No host."""
        return header, "", path

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"header": {"type": ...}, "seed": ...}``."""
        kcp: dict[str, Any] = {"header": {"type": header}}
        if path:
            kcp["seed"] = path
        return kcp

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The header type and the seed."""
        kcp = obj(value, where)
        hdr = obj(kcp.get("header"), f"{where}.header")
        header = self.header(text(hdr, "type"), f"{where}.header.type")
        path = text(kcp, "seed")
        drop_extra(kcp, ("header", "seed"), where, warn)
        return header, "", path

    def to_query(self, header: str, host: str, path: str) -> dict[str, str]:
        """``headerType`` and ``seed``."""
        query = {"headerType": header}
        if path:
            query["seed"] = path
        return query


class WSLinkFields(LinkFields):
    """ws: ``host`` is the Host header, ``path`` the path."""

    label = "ws"
    random_path = True

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """No header type."""
        return "none", host, path

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"path": ..., "headers": {"Host": ...}}``."""
        ws: dict[str, Any] = {}
        if path:
            ws["path"] = path
        if host:
            ws["headers"] = {"Host": host}
        return ws

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The path and the Host header."""
        ws = obj(value, where)
        path = text(ws, "path")
        headers = obj(ws.get("headers"), f"{where}.headers")
        host_key = _host_key(headers)
        host = text(headers, host_key) if host_key else ""
        drop_extra(ws, ("path", "headers"), where, warn)
        drop_extra(headers, (host_key or "Host",), f"{where}.headers", warn)
        return "none", host, path


class QUICLinkFields(LinkFields):
    """quic: ``type`` is the header obfuscation, ``host`` the security (v2rayN's place for
    it; ``quicSecurity`` in the URL form), ``path`` the key."""

    label = "quic"
    header_types = tuple(HEADER_TYPES)
    securities = ("none", "aes-128-gcm", "chacha20-poly1305")

    def header(self, value: str, key: str) -> str:
        """One of the mKCP header types."""
        header = value.lower() or "none"
        if header not in self.header_types:
            raise LinkFieldError(key, f"unknown quic header type {value!r} (expected one of "
                                      f"{', '.join(self.header_types)})")
        return header

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """Security lower-cased (empty is none); no key without security."""
        security = host.lower() or "none"
        if security not in self.securities:
            raise LinkFieldError("host", f"unknown quic security {host!r} (expected one of "
                                         f"{', '.join(self.securities)})")
        return header, security, path if security != "none" else ""

    def sni(self, host: str) -> str:
        """``host`` is the security, never a name."""
        return ""

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"security": ..., "key": ..., "header": {"type": ...}}``."""
        quic: dict[str, Any] = {"security": host or "none", "header": {"type": header}}
        if path:
            quic["key"] = path
        return quic

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The header type, the security and the key."""
        quic = obj(value, where)
        hdr = obj(quic.get("header"), f"{where}.header")
        header = self.header(text(hdr, "type"), f"{where}.header.type")
        security = text(quic, "security").lower() or "none"
        drop_extra(quic, ("header", "security", "key"), where, warn)
        return self.canonical(header, security, text(quic, "key"))

    def to_query(self, header: str, host: str, path: str) -> dict[str, str]:
        """``headerType``, ``quicSecurity`` and ``key``."""
        query = {"headerType": header, "quicSecurity": host or "none"}
        if path:
            query["key"] = path
        return query

    def fields_from_query(self, query: dict[str, str]) -> Fields:
        """``headerType``, ``quicSecurity``, ``key``."""
        return query.get("headerType", ""), query.get("quicSecurity", ""), query.get("key", "")


TCP = TCPLinkFields()
KCP = KCPLinkFields()
WS = WSLinkFields()
QUIC = QUICLinkFields()
