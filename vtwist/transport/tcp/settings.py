"""tcpSettings: plain data and its parser (no Twisted).

With ``header.type: "http"`` the connection carries V2Ray's HTTP header disguise (see
:mod:`vtwist.transport.tcp.disguise`). Defaults (Host, User-Agent ... headers; a value is
picked at random per connection from each list) are V2Ray 4.34's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node

Headers = list[tuple[str, list[str]]]

DEFAULT_REQUEST_HEADERS: Headers = [
    ("Host", ["www.baidu.com", "www.bing.com"]),
    ("User-Agent", [
        "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/53.0.2785.143 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 10_0_2 like Mac OS X) AppleWebKit/601.1"
        " (KHTML, like Gecko) CriOS/53.0.2785.109 Mobile/14A456 Safari/601.1.46",
    ]),
    ("Accept-Encoding", ["gzip, deflate"]),
    ("Connection", ["keep-alive"]),
    ("Pragma", ["no-cache"]),
]
DEFAULT_RESPONSE_HEADERS: Headers = [
    ("Content-Type", ["application/octet-stream", "video/mpeg"]),
    ("Transfer-Encoding", ["chunked"]),
    ("Connection", ["keep-alive"]),
    ("Pragma", ["no-cache"]),
    ("Cache-Control", ["private", "no-cache"]),
]


@dataclass
class HTTPRequestConfig:
    """``header.request``."""

    version: str = "1.1"
    method: str = "GET"
    paths: list[str] = field(default_factory=lambda: ["/"])
    headers: Headers = field(default_factory=lambda: list(DEFAULT_REQUEST_HEADERS))


@dataclass
class HTTPResponseConfig:
    """``header.response``."""

    version: str = "1.1"
    status: str = "200"
    reason: str = "OK"
    headers: Headers = field(default_factory=lambda: list(DEFAULT_RESPONSE_HEADERS))


@dataclass
class TCPSettings:
    """Validated ``tcpSettings``."""

    header_type: str = "none"
    request: HTTPRequestConfig = field(default_factory=HTTPRequestConfig)
    response: HTTPResponseConfig = field(default_factory=HTTPResponseConfig)
    accept_proxy_protocol: bool = False


def _headers(node: Node) -> Headers | None:
    if not node.has("headers"):
        return None
    headers_node = node.get("headers", {})
    result: Headers = []
    for name in sorted(headers_node.keys()):
        if headers_node.value[name] is None:
            raise headers_node.error("empty HTTP header value", name)
        values = headers_node.comma_list(name)
        result.append((name, values))
    return result or None


def _parse_request(node: Node) -> HTTPRequestConfig:
    request = HTTPRequestConfig()
    request.version = node.str("version", "") or request.version
    request.method = node.str("method", "") or request.method
    paths = node.comma_list("path")
    if paths:
        request.paths = paths
    headers = _headers(node)
    if headers:
        request.headers = headers
    node.warn_unknown()
    return request


def _parse_response(node: Node) -> HTTPResponseConfig:
    response = HTTPResponseConfig()
    response.version = node.str("version", "") or response.version
    response.status = node.str("status", "") or response.status
    response.reason = node.str("reason", "") or response.reason
    headers = _headers(node)
    if headers:
        response.headers = headers
    node.warn_unknown()
    return response


def parse_tcp_settings(node: Node, inbound: bool) -> TCPSettings:
    """Validate ``tcpSettings`` (``header.type`` none or http, with request/response)."""
    settings = TCPSettings()
    settings.accept_proxy_protocol = node.bool("acceptProxyProtocol", False)
    if settings.accept_proxy_protocol and not inbound:
        node.warn("acceptProxyProtocol only applies to inbounds; ignored")
    header = node.get("header", {})
    settings.header_type = header.str("type", "none", lower=True)
    if settings.header_type not in ("none", "http"):
        raise header.error(f"expected none or http, got {settings.header_type!r}", "type")
    if settings.header_type == "http":
        settings.request = _parse_request(header.get("request", {}))
        settings.response = _parse_response(header.get("response", {}))
    header.warn_unknown()
    node.warn_unknown()
    return settings
