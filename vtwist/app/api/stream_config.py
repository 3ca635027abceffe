"""V2Ray 4.34's protobuf ``transport.internet.StreamConfig`` (what a panel puts in an
AddInbound/AddOutbound's receiver or sender settings) as the JSON ``streamSettings`` vtwist's
config loader reads, so a handler added through the API is validated and built exactly as
one in a config file.

Covered: ``protocol_name`` (or the deprecated ``protocol`` enum) tcp (with the noop or http
header), mkcp (every header, seed), websocket, http (h2), quic, domainsocket and grpc (the
v2fly form ``v2ray.core.transport.internet.grpc.encoding.Config``, decoded by hand: 4.34 has
no such proto); ``security_type`` tls (certificates as bytes, inline); ``socket_settings``
(mark, tcpFastOpen, tproxy, acceptProxyProtocol). Anything else: UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from vtwist.app.api.errors import GrpcError, Status
from vtwist.app.api.v2raypb import (
    common_protocol_headers_pb2,
    transport_internet_domainsocket_config_pb2,
    transport_internet_headers_http_config_pb2,
    transport_internet_http_config_pb2,
    transport_internet_kcp_config_pb2,
    transport_internet_quic_config_pb2,
    transport_internet_tcp_config_pb2,
    transport_internet_tls_config_pb2,
    transport_internet_websocket_config_pb2,
)
from vtwist.transport.grpc.framing import FramingError, iter_fields

#: protocol_name (and the deprecated enum's values) -> the JSON network name
NETWORKS = {"tcp": "tcp", "mkcp": "kcp", "websocket": "ws", "http": "http",
            "domainsocket": "domainsocket", "quic": "quic", "grpc": "grpc", "gun": "grpc"}
_ENUM_NETWORKS = {0: "tcp", 2: "mkcp", 3: "websocket", 4: "http", 5: "domainsocket"}
#: JSON network -> streamSettings key
SETTINGS_KEYS = {"tcp": "tcpSettings", "kcp": "kcpSettings", "ws": "wsSettings",
                 "http": "httpSettings", "domainsocket": "dsSettings",
                 "quic": "quicSettings", "grpc": "grpcSettings"}
#: transport settings message -> JSON network
_MESSAGES = {
    "v2ray.core.transport.internet.tcp.Config": "tcp",
    "v2ray.core.transport.internet.kcp.Config": "kcp",
    "v2ray.core.transport.internet.websocket.Config": "ws",
    "v2ray.core.transport.internet.http.Config": "http",
    "v2ray.core.transport.internet.domainsocket.Config": "domainsocket",
    "v2ray.core.transport.internet.quic.Config": "quic",
    "v2ray.core.transport.internet.grpc.encoding.Config": "grpc",
}
#: kcp/quic packet header message -> JSON header type
PACKET_HEADERS = {
    "": "none",
    "v2ray.core.transport.internet.headers.noop.Config": "none",
    "v2ray.core.transport.internet.headers.srtp.Config": "srtp",
    "v2ray.core.transport.internet.headers.utp.Config": "utp",
    "v2ray.core.transport.internet.headers.wechat.VideoConfig": "wechat-video",
    "v2ray.core.transport.internet.headers.tls.PacketConfig": "dtls",
    "v2ray.core.transport.internet.headers.wireguard.WireguardConfig": "wireguard",
}
_QUIC_SECURITY = {common_protocol_headers_pb2.AES128_GCM: "aes-128-gcm",
                  common_protocol_headers_pb2.CHACHA20_POLY1305: "chacha20-poly1305",
                  common_protocol_headers_pb2.NONE: "none",
                  common_protocol_headers_pb2.UNKNOWN: "none"}
_USAGES = {0: "encipherment", 1: "verify", 2: "issue"}
_TLS = "v2ray.core.transport.internet.tls.Config"


def _decode(typed: Any, message_class: type, what: str) -> Any:
    message = message_class()
    try:
        message.ParseFromString(typed.value)
    except DecodeError as e:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: {typed.type} does not decode: "
                        f"{e}") from None
    return message


def _headers(items: Any) -> dict[str, list[str]]:
    return {h.name: list(h.value) for h in items}


def _http_header(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_headers_http_config_pb2.Config, what)
    request: dict[str, Any] = {}
    if c.request.version.value:
        request["version"] = c.request.version.value
    if c.request.method.value:
        request["method"] = c.request.method.value
    if c.request.uri:
        request["path"] = list(c.request.uri)
    if c.request.header:
        request["headers"] = _headers(c.request.header)
    response: dict[str, Any] = {}
    if c.response.version.value:
        response["version"] = c.response.version.value
    if c.response.HasField("status"):
        response["status"] = c.response.status.code
        response["reason"] = c.response.status.reason
    if c.response.header:
        response["headers"] = _headers(c.response.header)
    return {"type": "http", "request": request, "response": response}


def _tcp(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_tcp_config_pb2.Config, what)
    out: dict[str, Any] = {}
    kind = c.header_settings.type
    if kind == "v2ray.core.transport.internet.headers.http.Config":
        out["header"] = _http_header(c.header_settings, f"{what}.header_settings")
    elif kind not in ("", "v2ray.core.transport.internet.headers.noop.ConnectionConfig",
                      "v2ray.core.transport.internet.headers.noop.Config"):
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}.header_settings: unknown header "
                        f"{kind!r}")
    if c.accept_proxy_protocol:
        out["acceptProxyProtocol"] = True
    return out


def _packet_header(typed: Any, what: str) -> dict[str, str]:
    kind = PACKET_HEADERS.get(typed.type)
    if kind is None:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: unknown header {typed.type!r}")
    return {"type": kind}


def _kcp(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_kcp_config_pb2.Config, what)
    out: dict[str, Any] = {"congestion": c.congestion}
    for field, key in (("mtu", "mtu"), ("tti", "tti"), ("uplink_capacity", "uplinkCapacity"),
                       ("downlink_capacity", "downlinkCapacity")):
        if c.HasField(field):
            out[key] = getattr(c, field).value
    for field, key in (("read_buffer", "readBufferSize"), ("write_buffer", "writeBufferSize")):
        if c.HasField(field):  # bytes in protobuf, MB in JSON (4.34: 0 MB is 512 KB)
            out[key] = getattr(c, field).size // (1024 * 1024)
    out["header"] = _packet_header(c.header_config, f"{what}.header_config")
    if c.HasField("seed"):
        out["seed"] = c.seed.seed
    return out


def _ws(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_websocket_config_pb2.Config, what)
    out: dict[str, Any] = {"path": c.path}
    if c.header:
        out["headers"] = {h.key: h.value for h in c.header}
    if c.accept_proxy_protocol:
        out["acceptProxyProtocol"] = True
    return out


def _http(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_http_config_pb2.Config, what)
    out: dict[str, Any] = {"path": c.path}
    if c.host:
        out["host"] = list(c.host)
    return out


def _ds(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_domainsocket_config_pb2.Config, what)
    return {"path": c.path, "abstract": c.abstract, "padding": c.padding}


def _quic(typed: Any, what: str) -> dict[str, Any]:
    c = _decode(typed, transport_internet_quic_config_pb2.Config, what)
    security = _QUIC_SECURITY.get(c.security.type)
    if security is None:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}.security: cipher "
                        f"{c.security.type} is not one quic takes")
    return {"security": security, "key": c.key,
            "header": _packet_header(c.header, f"{what}.header")}


def _grpc(typed: Any, what: str) -> dict[str, Any]:
    """v2fly's ``grpc.encoding.Config`` {1: host, 2: service_name} (strings), read by hand."""
    fields = _string_fields(bytes(typed.value), what)
    return {"serviceName": fields.get(2, "")}


def _string_fields(data: bytes, what: str) -> dict[int, str]:
    """The length-delimited fields of a small message (last one wins), as text."""
    out: dict[int, str] = {}
    try:
        fields = list(iter_fields(data))
    except FramingError:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: does not decode") from None
    for number, wire, value in fields:
        if wire == 2:
            try:
                out[number] = value.decode()  # type: ignore[union-attr]
            except UnicodeDecodeError:
                raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: field {number} is not "
                                "text") from None
        elif wire != 0:
            raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: wire type {wire} unexpected")
    return out


_PARSERS = {"tcp": _tcp, "kcp": _kcp, "ws": _ws, "http": _http, "domainsocket": _ds,
            "quic": _quic, "grpc": _grpc}


def _pem_lines(data: bytes) -> list[str]:
    return data.decode("ascii", "replace").splitlines()


def tls_json(typed: Any, what: str) -> dict[str, Any]:
    """A ``tls.Config`` as JSON ``tlsSettings`` (certificates inline, as PEM lines)."""
    c = _decode(typed, transport_internet_tls_config_pb2.Config, what)
    out: dict[str, Any] = {"allowInsecure": c.allow_insecure,
                           "enableSessionResumption": c.enable_session_resumption,
                           "disableSystemRoot": c.disable_system_root}
    if c.server_name:
        out["serverName"] = c.server_name
    if c.next_protocol:
        out["alpn"] = list(c.next_protocol)
    certificates = []
    for cert in c.certificate:
        entry: dict[str, Any] = {"usage": _USAGES.get(cert.usage, "encipherment"),
                                 "certificate": _pem_lines(cert.Certificate)}
        if cert.Key:
            entry["key"] = _pem_lines(cert.Key)
        certificates.append(entry)
    if certificates:
        out["certificates"] = certificates
    return out


def stream_json(stream: Any, what: str) -> dict[str, Any]:
    """A ``StreamConfig`` as JSON ``streamSettings``."""
    name = stream.protocol_name or _ENUM_NETWORKS.get(stream.protocol, "")
    network = NETWORKS.get(name)
    if network is None:
        raise GrpcError(Status.UNIMPLEMENTED, f"{what}: transport "
                        f"{name or stream.protocol!r} is not one vtwist builds")
    out: dict[str, Any] = {"network": network}
    for i, transport in enumerate(stream.transport_settings):
        where = f"{what}.transport_settings[{i}]"
        tname = transport.protocol_name or _ENUM_NETWORKS.get(transport.protocol, "")
        kind = _MESSAGES.get(transport.settings.type)
        if kind is None:
            raise GrpcError(Status.UNIMPLEMENTED, f"{where}: settings of type "
                            f"{transport.settings.type or 'nothing'!r}")
        if tname and NETWORKS.get(tname) != kind:
            raise GrpcError(Status.INVALID_ARGUMENT, f"{where}: {tname} with "
                            f"{transport.settings.type}")
        out[SETTINGS_KEYS[kind]] = _PARSERS[kind](transport.settings, f"{where}.settings")
    if stream.security_type:
        if stream.security_type != _TLS:
            raise GrpcError(Status.UNIMPLEMENTED, f"{what}.security_type: "
                            f"{stream.security_type!r} (vtwist: tls)")
        out["security"] = "tls"
        settings = [s for s in stream.security_settings if s.type == _TLS]
        if settings:
            out["tlsSettings"] = tls_json(settings[0], f"{what}.security_settings")
    if stream.HasField("socket_settings"):
        s = stream.socket_settings
        sockopt: dict[str, Any] = {}
        if s.mark:
            sockopt["mark"] = s.mark
        if s.tfo:
            sockopt["tcpFastOpen"] = s.tfo == 1
        if s.tproxy:
            sockopt["tproxy"] = {1: "tproxy", 2: "redirect"}.get(s.tproxy, "off")
        if s.accept_proxy_protocol:
            sockopt["acceptProxyProtocol"] = True
        if sockopt:
            out["sockopt"] = sockopt
    return out
