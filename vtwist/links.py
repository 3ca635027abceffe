"""``vmess://`` share links and subscriptions <-> V2Ray outbound configs.

Two link forms are read:

* the v2rayN "v2" form: ``vmess://`` + base64 of a JSON object with the fields ``v ps add
  port id aid scy net type host path tls sni alpn fp`` (values as strings or numbers; the
  base64 may be URL-safe and may lack padding);
* the URL form: ``vmess://uuid@host:port?type=ws&security=tls&path=...#name`` (``type`` is
  the network, ``headerType`` the disguise, ``encryption`` the VMess security).

A link maps to an outbound dict exactly as v2rayN maps it to a V2Ray 4.34 config (``net``
-> ``streamSettings.network``; ``type`` -> the tcp/kcp header; ``host``/``path`` -> the
ws path and Host header, the tcp http request, or for kcp ``path`` is the seed; ``tls``,
``sni``, ``alpn`` -> ``tlsSettings``), and :func:`outbound_to_link` maps it back:
``outbound_to_link(link.to_outbound()) == link.canonical()`` for every supported link.

Malformed input raises :class:`LinkError`, whose message is one line naming the field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from vtwist.transport.kcp.obfs import HEADER_TYPES

SCHEME = "vmess://"
SUPPORTED_NETWORKS = ("tcp", "kcp", "ws")
UNSUPPORTED_NETWORKS = ("h2", "quic", "grpc", "domainsocket")
NETWORK_ALIASES = {
    "": "tcp", "tcp": "tcp", "kcp": "kcp", "mkcp": "kcp", "ws": "ws", "websocket": "ws",
    "h2": "h2", "http": "h2", "quic": "quic", "grpc": "grpc", "gun": "grpc",
    "ds": "domainsocket", "domainsocket": "domainsocket",
}
KCP_HEADERS = tuple(HEADER_TYPES)  # none, srtp, utp, wechat-video, dtls, wireguard
TCP_HEADERS = ("none", "http")
SECURITIES = ("auto", "aes-128-gcm", "chacha20-poly1305", "none", "zero")

CANNOT_ENCODE = "cannot make a vmess link"

Warn = Callable[[str], None]


class LinkError(ValueError):
    """A malformed or unsupported link (or outbound); ``field`` names the culprit."""

    def __init__(self, field: str, message: str, what: str = "invalid vmess link"):
        self.field = field
        self.message = message
        super().__init__(f"{what}: {field}: {message}")


class UnsupportedTransportError(LinkError):
    """The link asks for a transport vtwist does not implement (h2, quic, grpc)."""

    def __init__(self, network: str, field: str = "net"):
        self.network = network
        super().__init__(field, f"transport {network!r} is not supported by vtwist yet "
                                f"(supported: {', '.join(SUPPORTED_NETWORKS)})")


def _default_warn(message: str) -> None:
    from twisted.logger import Logger

    Logger(namespace="vtwist.links").warn("{text}", text=message)


def _split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (v2rayN's comma lists)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _join_list(items: list[str]) -> str:
    return ",".join(items)


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

    # -- canonical form ---------------------------------------------------
    def canonical(self) -> VmessLink:
        """The same link with fields that carry no meaning for its transport cleared.

        Raises :class:`UnsupportedTransportError` for h2/quic/grpc.
        """
        if self.net not in SUPPORTED_NETWORKS:
            raise UnsupportedTransportError(self.net)
        header = self.type
        host, path = self.host, self.path
        if self.net == "tcp":
            if header != "http":
                header, host, path = "none", "", ""
            else:
                host, path = _join_list(_split_list(host)), _join_list(_split_list(path))
        elif self.net == "kcp":
            host = ""
        else:  # ws
            header = "none"
        tls, sni, alpn, insecure = self.tls, self.sni, self.alpn, self.allow_insecure
        if tls:
            if not sni and host:
                sni = _split_list(host)[0] if self.net == "tcp" else host
            alpn = _join_list(_split_list(alpn))
        else:
            sni, alpn, insecure = "", "", False
        return replace(self, v="2", type=header, host=host, path=path, sni=sni, alpn=alpn,
                       allow_insecure=insecure, fp="")

    def ignored(self) -> list[str]:
        """Notes on fields this link sets that its outbound cannot use (for warnings)."""
        link = self.canonical()
        notes = []
        if self.fp:
            notes.append(f"fp {self.fp!r}: V2Ray 4.34 has no TLS fingerprint setting; ignored")
        for name in ("host", "path", "sni", "alpn"):
            if getattr(self, name) and not getattr(link, name):
                notes.append(f"{name} {getattr(self, name)!r} means nothing for "
                             f"{self.net}{'+tls' if self.tls else ''}; ignored")
        if self.type != link.type:
            notes.append(f"type {self.type!r} means nothing for {self.net}; ignored")
        if self.allow_insecure and not link.allow_insecure:
            notes.append("allowInsecure without tls; ignored")
        return notes

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
        stream: dict[str, Any] = {"network": link.net, "security": "tls" if link.tls else "none"}
        if link.net == "tcp" and link.type == "http":
            request: dict[str, Any] = {}
            if link.path:
                request["path"] = _split_list(link.path)
            if link.host:
                request["headers"] = {"Host": _split_list(link.host)}
            stream["tcpSettings"] = {"header": {"type": "http", "request": request}}
        elif link.net == "kcp":
            kcp: dict[str, Any] = {"header": {"type": link.type}}
            if link.path:
                kcp["seed"] = link.path
            stream["kcpSettings"] = kcp
        elif link.net == "ws":
            ws: dict[str, Any] = {}
            if link.path:
                ws["path"] = link.path
            if link.host:
                ws["headers"] = {"Host": link.host}
            stream["wsSettings"] = ws
        if link.tls:
            tls: dict[str, Any] = {}
            if link.sni:
                tls["serverName"] = link.sni
            if link.alpn:
                tls["alpn"] = _split_list(link.alpn)
            if link.allow_insecure:
                tls["allowInsecure"] = True
            stream["tlsSettings"] = tls
        outbound["streamSettings"] = stream
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
        query: dict[str, str] = {"type": link.net, "encryption": link.scy,
                                 "security": "tls" if link.tls else "none"}
        if link.net in ("tcp", "kcp"):
            query["headerType"] = link.type
        if link.net == "kcp":
            if link.path:
                query["seed"] = link.path
        else:
            if link.host:
                query["host"] = link.host
            if link.path:
                query["path"] = link.path
        if link.tls:
            if link.sni:
                query["sni"] = link.sni
            if link.alpn:
                query["alpn"] = link.alpn
            if link.allow_insecure:
                query["allowInsecure"] = "1"
        host = f"[{link.add}]" if ":" in link.add else link.add
        url = f"{SCHEME}{link.id}@{host}:{link.port}?{urlencode(query, quote_via=quote)}"
        if link.ps:
            url += "#" + quote(link.ps, safe="")
        return url

    @property
    def name(self) -> str:
        """``ps``, or ``add:port`` when the link has no name."""
        return self.ps or f"{self.add}:{self.port}"


# -- field coercion --------------------------------------------------------------
def _text(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise LinkError(key, f"expected a string, got {json.dumps(value)}")
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str):
        raise LinkError(key, f"expected a string, got {type(value).__name__}")
    return value


def _int(data: dict[str, Any], key: str, lo: int, hi: int, required: bool,
         what: str, default: int = 0) -> int:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise LinkError(key, f"is missing (the {what})")
        return default
    if isinstance(value, bool):
        raise LinkError(key, f"expected a number {lo}-{hi}, got {json.dumps(value)}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise LinkError(key, f"expected a number {lo}-{hi}, got {value!r}") from None
    if not isinstance(value, int):
        raise LinkError(key, f"expected a number {lo}-{hi}, got {json.dumps(value)}")
    if not lo <= value <= hi:
        raise LinkError(key, f"{what} out of range {lo}-{hi}: {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "0", "false"):
        return value.strip().lower() in ("1", "true")
    raise LinkError(key, f"expected true or false, got {json.dumps(value)}")


def _uuid(value: str, key: str) -> str:
    if not value:
        raise LinkError(key, "is missing (the user id, a UUID)")
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        raise LinkError(key, f"not a valid UUID: {value!r}") from None
    if len(value.replace("-", "")) != 32 or value.startswith(("{", "urn:")):
        raise LinkError(key, f"not a valid UUID: {value!r}")
    return str(parsed)


def _network(value: str, key: str) -> str:
    net = NETWORK_ALIASES.get(value.lower())
    if net is None:
        raise LinkError(key, f"unknown transport {value!r} (expected one of tcp, kcp, ws, "
                             "h2, quic, grpc)")
    return net


def _security(value: str, key: str) -> str:
    scy = value.lower() or "auto"
    if scy not in SECURITIES:
        raise LinkError(key, f"unknown VMess security {value!r} (expected one of "
                             f"{', '.join(SECURITIES)})")
    return scy


def _tls(value: str, key: str) -> str:
    tls = value.lower()
    if tls in ("", "none", "0", "false"):
        return ""
    if tls in ("tls", "1", "true"):
        return "tls"
    raise LinkError(key, f"{value!r} is not supported by vtwist (expected tls or empty)")


def _header(net: str, value: str, key: str) -> str:
    header = value.lower() or "none"
    if net == "kcp" and header not in KCP_HEADERS:
        raise LinkError(key, f"unknown mKCP header type {value!r} (expected one of "
                             f"{', '.join(KCP_HEADERS)})")
    if net == "tcp" and header not in TCP_HEADERS:
        raise LinkError(key, f"unknown tcp header type {value!r} (expected none or http)")
    return header


def _address(value: str, key: str) -> str:
    value = value.strip()
    if not value:
        raise LinkError(key, "is missing (the server address)")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if ":" in value:
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            raise LinkError(key, f"not a host name or IP address: {value!r}") from None
    if any(c.isspace() or c in "/?#@[]\\%" for c in value):
        raise LinkError(key, f"not a host name or IP address: {value!r}")
    return value


# -- parsing ---------------------------------------------------------------------
def _b64decode(body: str) -> bytes:
    text = "".join(body.split())
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    if not text:
        raise binascii.Error("empty")
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def link_from_json(data: Any) -> VmessLink:
    """Build a :class:`VmessLink` from a decoded v2 JSON object."""
    if not isinstance(data, dict):
        raise LinkError("body", f"expected a JSON object, got {type(data).__name__}")
    net = _network(_text(data, "net").strip(), "net")
    insecure_key = next((k for k in ("allowInsecure", "allowinsecure", "insecure",
                                     "skip-cert-verify") if k in data), None)
    return VmessLink(
        v=_text(data, "v", "2").strip() or "2",
        ps=_text(data, "ps"),
        add=_address(_text(data, "add"), "add"),
        port=_int(data, "port", 1, 65535, True, "port"),
        id=_uuid(_text(data, "id").strip(), "id"),
        aid=_int(data, "aid", 0, 65535, False, "alterId"),
        scy=_security(_text(data, "scy").strip(), "scy"),
        net=net,
        type=_header(net, _text(data, "type").strip(), "type"),
        host=_text(data, "host"),
        path=_text(data, "path"),
        tls=_tls(_text(data, "tls").strip(), "tls"),
        sni=_text(data, "sni"),
        alpn=_text(data, "alpn"),
        fp=_text(data, "fp"),
        allow_insecure=_bool(data.get(insecure_key), insecure_key) if insecure_key else False,
    )


def _parse_base64_form(body: str) -> VmessLink:
    try:
        raw = _b64decode(body)
    except (binascii.Error, ValueError):
        raise LinkError("body", "not valid base64 (expected vmess:// followed by base64 of "
                                "a JSON object, or vmess://uuid@host:port?...)") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LinkError("body", "base64 does not decode to UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LinkError("body", f"not valid JSON after base64 decoding: {e.msg} "
                                f"at column {e.colno}") from None
    except RecursionError:
        raise LinkError("body", "not valid JSON after base64 decoding: nested too "
                                "deeply") from None
    return link_from_json(data)


def _parse_url_form(body: str) -> VmessLink:
    rest, _, fragment = body.partition("#")
    rest, _, query_text = rest.partition("?")
    userinfo, _, hostport = rest.rpartition("@")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    if hostport.startswith("["):
        host, sep, port_text = hostport[1:].partition("]")
        if not sep or (port_text and not port_text.startswith(":")):
            raise LinkError("add", f"malformed [IPv6] address in {hostport!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    userinfo = unquote(userinfo)
    data: dict[str, Any] = {"add": unquote(host), "port": port_text, "ps": unquote(fragment)}
    if ":" in userinfo:
        # v2rayN's variant: vmess://net[+tls]:uuid@host:port?type=<header>&path=...
        net_part, _, data["id"] = userinfo.partition(":")
        net, _, tls = net_part.partition("+")
        data.update(net=net, tls=tls, type=query.get("type", ""), host=query.get("host", ""),
                    path=query.get("path", ""))
    else:
        data.update(id=userinfo, net=query.get("type", ""), scy=query.get("encryption", ""),
                    type=query.get("headerType", ""), host=query.get("host", ""),
                    path=query.get("path", ""), tls=query.get("security", ""),
                    sni=query.get("sni", ""), alpn=query.get("alpn", ""),
                    fp=query.get("fp", ""), aid=query.get("alterId", query.get("aid", "")))
        if query.get("allowInsecure"):
            data["allowInsecure"] = query["allowInsecure"]
        if _network(str(data["net"]), "type") == "kcp":
            data["path"] = query.get("seed", "")
    try:
        return link_from_json(data)
    except LinkError as e:
        if e.field in ("net", "type", "scy", "tls"):
            names = {"net": "type", "type": "headerType", "scy": "encryption", "tls": "security"}
            if ":" not in userinfo:
                raise LinkError(names[e.field], e.message) from None
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


def link_to_outbound(link: str, tag: str | None = None) -> dict[str, Any]:
    """Parse ``link`` and return its outbound dict."""
    return parse_link(link).to_outbound(tag)


# -- outbound -> link ------------------------------------------------------------------
def _obj(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LinkError(path, f"expected an object, got {type(value).__name__}")
    return value


def _first(value: Any, path: str, warn: Warn, what: str) -> dict[str, Any]:
    if not isinstance(value, list) or not value:
        raise LinkError(path, f"expected a non-empty array of {what}")
    if len(value) > 1:
        warn(f"{path}: a vmess link holds one {what[:-1]}; using the first of {len(value)}")
    return _obj(value[0], f"{path}[0]")


def _drop_extra(obj: dict[str, Any], known: tuple[str, ...], path: str, warn: Warn) -> None:
    for key in obj:
        if key not in known:
            warn(f"{path}.{key} cannot be carried by a vmess link; dropped")


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise LinkError(path, "expected a string or a list of strings")


def outbound_to_link(outbound: dict[str, Any], warn: Warn | None = None) -> VmessLink:
    """The link for a VMess outbound dict (the inverse of :meth:`VmessLink.to_outbound`).

    Settings a link cannot express are dropped with a warning through ``warn``.
    """
    try:
        return _outbound_to_link(outbound, warn or _default_warn)
    except UnsupportedTransportError:
        raise
    except LinkError as e:
        raise LinkError(e.field, e.message, CANNOT_ENCODE) from None


def _outbound_to_link(outbound: dict[str, Any], warn: Warn) -> VmessLink:
    outbound = _obj(outbound, "outbound")
    protocol = str(outbound.get("protocol", "")).lower()
    if protocol != "vmess":
        raise LinkError("protocol", f"only vmess outbounds have vmess links, got {protocol!r}")
    settings = _obj(outbound.get("settings"), "settings")
    server = _first(settings.get("vnext"), "settings.vnext", warn, "servers")
    user = _first(server.get("users"), "settings.vnext[0].users", warn, "users")
    upath = "settings.vnext[0].users[0]"
    level = _int(user, "level", 0, 2**32 - 1, False, "level")
    if level:
        warn(f"{upath}.level {level} cannot be carried by a vmess link; dropped")
    stream = _obj(outbound.get("streamSettings"), "streamSettings")
    net = _network(_text(stream, "network"), "streamSettings.network")
    if net not in SUPPORTED_NETWORKS:
        raise UnsupportedTransportError(net, "streamSettings.network")
    tls = _tls(_text(stream, "security"), "streamSettings.security")
    header, host, path = "none", "", ""
    if net == "tcp":
        tcp = _obj(stream.get("tcpSettings"), "streamSettings.tcpSettings")
        hdr = _obj(tcp.get("header"), "streamSettings.tcpSettings.header")
        header = _header("tcp", _text(hdr, "type"), "streamSettings.tcpSettings.header.type")
        if header == "http":
            request = _obj(hdr.get("request"), "streamSettings.tcpSettings.header.request")
            rpath = "streamSettings.tcpSettings.header.request"
            path = _join_list(_string_list(request.get("path"), f"{rpath}.path"))
            headers = _obj(request.get("headers"), f"{rpath}.headers")
            host_key = next((k for k in headers if k.lower() == "host"), None)
            if host_key:
                host = _join_list(_string_list(headers[host_key], f"{rpath}.headers.Host"))
            _drop_extra(request, ("path", "headers"), rpath, warn)
            _drop_extra(headers, (host_key or "Host",), f"{rpath}.headers", warn)
            _drop_extra(hdr, ("type", "request"), "streamSettings.tcpSettings.header", warn)
    elif net == "kcp":
        kcp = _obj(stream.get("kcpSettings"), "streamSettings.kcpSettings")
        hdr = _obj(kcp.get("header"), "streamSettings.kcpSettings.header")
        header = _header("kcp", _text(hdr, "type"), "streamSettings.kcpSettings.header.type")
        path = _text(kcp, "seed")
        _drop_extra(kcp, ("header", "seed"), "streamSettings.kcpSettings", warn)
    else:
        ws = _obj(stream.get("wsSettings"), "streamSettings.wsSettings")
        path = _text(ws, "path")
        headers = _obj(ws.get("headers"), "streamSettings.wsSettings.headers")
        host_key = next((k for k in headers if k.lower() == "host"), None)
        if host_key:
            host = _text(headers, host_key)
        _drop_extra(ws, ("path", "headers"), "streamSettings.wsSettings", warn)
        _drop_extra(headers, (host_key or "Host",), "streamSettings.wsSettings.headers", warn)
    sni, alpn, insecure = "", "", False
    if tls:
        tls_settings = _obj(stream.get("tlsSettings"), "streamSettings.tlsSettings")
        sni = _text(tls_settings, "serverName")
        alpn = _join_list(_string_list(tls_settings.get("alpn"), "streamSettings.tlsSettings.alpn"))
        insecure = _bool(tls_settings.get("allowInsecure"), "streamSettings.tlsSettings.allowInsecure")
        _drop_extra(tls_settings, ("serverName", "alpn", "allowInsecure"),
                    "streamSettings.tlsSettings", warn)
    if _obj(outbound.get("mux"), "mux").get("enabled"):
        warn("mux cannot be carried by a vmess link; dropped")
    for key in ("proxySettings", "sendThrough"):
        if key in outbound:
            warn(f"{key} cannot be carried by a vmess link; dropped")
    link = VmessLink(
        ps=_text(outbound, "tag"),
        add=_address(_text(server, "address"), "settings.vnext[0].address"),
        port=_int(server, "port", 1, 65535, True, "port"),
        id=_uuid(_text(user, "id"), f"{upath}.id"),
        aid=_int(user, "alterId", 0, 65535, False, "alterId"),
        scy=_security(_text(user, "security"), f"{upath}.security"),
        net=net, type=header, host=host, path=path, tls=tls, sni=sni, alpn=alpn,
        allow_insecure=insecure,
    )
    return link.canonical()


def find_outbound(config: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    """The outbound tagged ``tag`` in a full config, else its first VMess outbound."""
    outbounds = _obj(config, "config").get("outbounds")
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


# -- subscriptions ---------------------------------------------------------------------
def decode_subscription(text: str) -> list[str]:
    """The lines of a subscription body: base64 (any flavour) or already plain links."""
    stripped = text.strip()
    if "://" in stripped:
        return stripped.splitlines()
    try:
        decoded = _b64decode(stripped).decode("utf-8-sig")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise LinkError("body", "not base64 and not a list of links", "invalid subscription") from None
    return decoded.splitlines()


def parse_subscription(text: str, warn: Warn | None = None) -> list[VmessLink]:
    """All usable vmess links of a subscription; other lines are skipped with a warning."""
    warn = warn or _default_warn
    links: list[VmessLink] = []
    for number, line in enumerate(decode_subscription(text), 1):
        line = line.strip()
        if not line:
            continue
        scheme = line.partition("://")[0].lower() if "://" in line else ""
        if scheme != "vmess":
            what = f"a {scheme}:// link" if scheme else "not a link"
            warn(f"subscription line {number}: skipped, {what} (vtwist reads vmess:// only)")
            continue
        try:
            link = parse_link(line)
            link.canonical()
        except LinkError as e:
            warn(f"subscription line {number}: skipped, {e}")
            continue
        links.append(link)
    return links


def subscription_outbounds(text: str, warn: Warn | None = None) -> list[dict[str, Any]]:
    """A subscription as outbound dicts with unique tags (the link names)."""
    outbounds: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for link in parse_subscription(text, warn):
        name = link.name
        seen[name] = seen.get(name, 0) + 1
        tag = name if seen[name] == 1 else f"{name} #{seen[name]}"
        outbounds.append(link.to_outbound(tag))
    return outbounds


def pick_outbound(outbounds: list[dict[str, Any]], pick: str | None) -> dict[str, Any]:
    """The outbound named ``pick`` (its tag; or a 1-based index), else the first."""
    if not outbounds:
        raise LinkError("links", "no usable vmess links", "invalid subscription")
    if pick is None:
        return outbounds[0]
    for ob in outbounds:
        if ob.get("tag") == pick:
            return ob
    folded = [ob for ob in outbounds if str(ob.get("tag", "")).casefold() == pick.casefold()]
    if len(folded) == 1:
        return folded[0]
    if pick.isdigit() and 1 <= int(pick) <= len(outbounds):
        return outbounds[int(pick) - 1]
    names = ", ".join(repr(ob.get("tag")) for ob in outbounds[:20])
    more = f" and {len(outbounds) - 20} more" if len(outbounds) > 20 else ""
    raise LinkError("--pick", f"no link named {pick!r} (names: {names}{more})",
                    "invalid subscription")


# -- client configs --------------------------------------------------------------------
def parse_socks(socks: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"`` or ``"PORT"`` -> (host, port)."""
    text = socks.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise LinkError("--socks", f"expected HOST:PORT, got {socks!r}", "bad address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise LinkError("--socks", f"expected HOST:PORT, got {socks!r}", "bad address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise LinkError("--socks", f"port out of range 1-65535 in {socks!r}", "bad address")
    return host, int(port_text)


def client_config(outbound: dict[str, Any], socks: str = "127.0.0.1:1080") -> dict[str, Any]:
    """A complete client config: SOCKS5 inbound (UDP on), ``outbound``, then freedom."""
    host, port = parse_socks(socks)
    reply_ip = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    outbound = dict(outbound)
    if not outbound.get("tag"):
        outbound = {"protocol": outbound.get("protocol"), "tag": "proxy",
                    **{k: v for k, v in outbound.items() if k not in ("protocol", "tag")}}
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "tag": "socks-in", "listen": host, "port": port, "protocol": "socks",
            "settings": {"auth": "noauth", "udp": True, "ip": reply_ip},
        }],
        "outbounds": [outbound, {"tag": "direct", "protocol": "freedom", "settings": {}}],
    }


def client_config_from_link(link: str, socks: str = "127.0.0.1:1080") -> dict[str, Any]:
    """The client config that serves SOCKS5 on ``socks`` and sends everything via ``link``."""
    return client_config(link_to_outbound(link), socks)


def client_config_from_subscription(text: str, pick: str | None = None,
                                    socks: str = "127.0.0.1:1080",
                                    warn: Warn | None = None) -> dict[str, Any]:
    """The client config for the first link of a subscription, or the one named ``pick``."""
    return client_config(pick_outbound(subscription_outbounds(text, warn), pick), socks)


def encode_subscription(links: list[str]) -> str:
    """A subscription body for ``links`` (base64 of the lines)."""
    return base64.b64encode("\n".join(links).encode("utf-8")).decode("ascii")


__all__ = [
    "LinkError", "UnsupportedTransportError", "VmessLink", "parse_link", "link_from_json",
    "link_to_outbound", "outbound_to_link", "find_outbound", "decode_subscription",
    "parse_subscription", "subscription_outbounds", "pick_outbound", "parse_socks",
    "client_config", "client_config_from_link", "client_config_from_subscription",
    "encode_subscription",
]
