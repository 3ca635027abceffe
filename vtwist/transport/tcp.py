"""tcpSettings: plain TCP, optionally with V2Ray's HTTP header disguise.

With ``header.type: "http"`` the client puts an HTTP request header in front of its first
write and skips the response header it gets back; the server reads the request header (at
most 8192 bytes), checks that its path is one of ``request.path`` (404 otherwise) and puts the
response header in front of its first write. A server that closes before writing anything
sends a 400 response, as V2Ray does. Defaults (Host, User-Agent ... headers; a value is
picked at random per connection from each list) are V2Ray 4.34's.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger

from vtwist.address import parse_ip
from vtwist.config.node import Node
from vtwist.transport.layer import HalfCloseLayer, LayerClientEndpoint, LayerServerEndpoint

log = Logger(namespace="vtwist.transport.tcp")

MAX_HEADER_BYTES = 8192
SERVER_HANDSHAKE_TIMEOUT = 4.0

Headers = list[tuple[str, list[str]]]


def tcp_client_endpoint(reactor: Any, host: str, port: int,
                        timeout: float = 30) -> IStreamClientEndpoint:
    """A TCP client endpoint: straight to an IP literal, through the resolver for a name.

    ``HostnameEndpoint`` costs a resolver-thread round trip per connection even for an IP
    literal, so literals get ``TCP4ClientEndpoint`` / ``TCP6ClientEndpoint``.
    """
    ip = parse_ip(host)
    if ip is None:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, str(ip), port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, str(ip), port, timeout=timeout)

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
_ERROR_HEADERS: Headers = [("Connection", ["close"]), ("Cache-Control", ["private"]),
                           ("Content-Length", ["0"])]


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


# -- header bytes -------------------------------------------------------------------------
def _pick(values: list[str]) -> str:
    return random.choice(values) if values else ""


def request_header(config: HTTPRequestConfig) -> bytes:
    """A request header with one value picked from each list."""
    lines = [f"{config.method} {_pick(config.paths)} HTTP/{config.version}"]
    lines.extend(f"{name}: {_pick(values)}" for name, values in config.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def response_header(version: str, status: str, reason: str, headers: Headers) -> bytes:
    """A response header; a Date header is added unless configured."""
    lines = [f"HTTP/{version} {status} {reason}"]
    lines.extend(f"{name}: {_pick(values)}" for name, values in headers)
    if not any(name.lower() == "date" for name, _ in headers):
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _error_response(status: str, reason: str) -> bytes:
    return response_header("1.1", status, reason, _ERROR_HEADERS)


def request_path(header: bytes) -> str | None:
    """The path of a request header block (query dropped, %-decoded), or None if malformed."""
    text = header.decode("latin-1")
    first, _, rest = text.partition("\r\n")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[0]:
        return None
    for line in rest.split("\r\n"):
        if line and ":" not in line:
            return None
    target = parts[1]
    if "://" in target:
        path = urlsplit(target).path
    else:
        path = target.split("?", 1)[0].split("#", 1)[0]
    return unquote(path)


# -- the layers ----------------------------------------------------------------------------
class _HTTPHeaderLayer(HalfCloseLayer):
    """Puts a header in front of the first write."""

    name = "http header"
    log = log
    header: bytes | None = None

    def write(self, data: bytes) -> None:
        """The first write carries the header."""
        if self.header is not None:
            header, self.header = self.header, None
            self.transport.writeSequence([header, data])
        else:
            self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        """The first write carries the header."""
        if self.header is not None:
            header, self.header = self.header, None
            self.transport.writeSequence([header, *data])
        else:
            self.transport.writeSequence(data)


class HTTPHeaderServerLayer(_HTTPHeaderLayer):
    """Reads and checks the request header; the response header goes out with our data."""

    handshakeTimeout = SERVER_HANDSHAKE_TIMEOUT

    def __init__(self, factory: IProtocolFactory, settings: TCPSettings,
                 clock: Any = None) -> None:
        super().__init__(factory, None, clock)
        self.settings = settings
        self.buffer = bytearray()
        response = settings.response
        self.header = response_header(response.version, response.status, response.reason,
                                      response.headers)

    def handshakeData(self, data: bytes) -> None:
        """Collect the request header, check its path."""
        start = max(0, len(self.buffer) - 3)
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n", start)
        if end < 0 and len(self.buffer) <= MAX_HEADER_BYTES:
            return
        if end < 0 or end + 4 > MAX_HEADER_BYTES:
            self._refuse(f"request header longer than {MAX_HEADER_BYTES} bytes",
                         "400", "Bad Request")
            return
        path = request_path(bytes(self.buffer[:end + 2]))
        if path is None:
            self._refuse("malformed HTTP request header", "400", "Bad Request")
            return
        if path not in self.settings.request.paths:
            self._refuse(f"request for {path!r}, expected one of {self.settings.request.paths}",
                         "404", "Not Found")
            return
        leftover = bytes(self.buffer[end + 4:])
        self.buffer = bytearray()
        self.handshakeDone(leftover)

    def _refuse(self, why: str, status: str, reason: str) -> None:
        """Answer with an HTTP error instead of the configured response, and close."""
        self.header = None
        self.handshakeFailed(why, _error_response(status, reason))

    def closeLayer(self) -> None:
        """Closing before answering sends 400, like V2Ray."""
        if self.header is not None:
            self.header = None
            self.transport.write(_error_response("400", "Bad Request"))
        self.transport.loseConnection()


class HTTPHeaderClientLayer(_HTTPHeaderLayer):
    """Sends the request header with the first write; skips the response header."""

    def __init__(self, factory: IProtocolFactory, ready: Deferred | None,
                 settings: TCPSettings) -> None:
        super().__init__(factory, ready)
        self.settings = settings
        self.header = request_header(settings.request)
        self.buffer: bytearray | None = bytearray()

    def handshakeStarted(self) -> None:
        """Nothing to wait for: the application may write at once."""
        self.handshakeDone()

    def streamData(self, data: bytes) -> None:
        """Skip the response header, then pass bytes through."""
        if self.buffer is None:
            self.app.dataReceived(data)
            return
        start = max(0, len(self.buffer) - 3)
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self.log.info("http header: response header from {peer} longer than"
                              " {n} bytes, closing", peer=self._peerText(), n=MAX_HEADER_BYTES)
                self.buffer = None
                self.transport.abortConnection()
            return
        rest = bytes(self.buffer[end + 4:])
        self.buffer = None
        if rest:
            self.app.dataReceived(rest)


def HTTPHeaderServerEndpoint(endpoint: IStreamServerEndpoint, settings: TCPSettings,
                             clock: Any = None) -> IStreamServerEndpoint:
    """``endpoint`` (tcp or tls) expecting V2Ray's HTTP request disguise."""
    return LayerServerEndpoint(endpoint, lambda f: HTTPHeaderServerLayer(f, settings, clock))


def HTTPHeaderClientEndpoint(endpoint: IStreamClientEndpoint,
                             settings: TCPSettings) -> IStreamClientEndpoint:
    """``endpoint`` (tcp or tls) speaking V2Ray's HTTP request disguise."""
    return LayerClientEndpoint(endpoint,
                               lambda f, ready: HTTPHeaderClientLayer(f, ready, settings))


# -- registry hooks (vtwist.transport.registry) ---------------------------------------------
def server_base(reactor: Any, listen: str, port: int, stream: Any) -> IStreamServerEndpoint:
    """The TCP listening endpoint under ``stream`` (tcp and ws), PROXY protocol if asked."""
    ip = parse_ip(listen)
    endpoint: IStreamServerEndpoint
    if ip is not None and ip.version == 6:
        endpoint = TCP6ServerEndpoint(reactor, port, interface=str(ip))
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=listen)
    if stream.accept_proxy_protocol:
        from twisted.protocols.haproxy import proxyEndpoint

        endpoint = proxyEndpoint(endpoint)
    return endpoint


def client_base(reactor: Any, host: str, port: int, stream: Any) -> IStreamClientEndpoint:
    """The TCP connecting endpoint under ``stream`` (tcp and ws)."""
    return tcp_client_endpoint(reactor, host, port)


def server_layer(endpoint: IStreamServerEndpoint, stream: Any) -> IStreamServerEndpoint:
    """The HTTP header disguise above TCP (and TLS) when ``tcpSettings`` asks for it."""
    settings = stream.network_settings.get("tcp")
    if settings is not None and settings.header_type == "http":
        return HTTPHeaderServerEndpoint(endpoint, settings)
    return endpoint


def client_layer(endpoint: IStreamClientEndpoint, host: str, port: int,
                 stream: Any) -> IStreamClientEndpoint:
    """The HTTP header disguise above TCP (and TLS) when ``tcpSettings`` asks for it."""
    settings = stream.network_settings.get("tcp")
    if settings is not None and settings.header_type == "http":
        return HTTPHeaderClientEndpoint(endpoint, settings)
    return endpoint
