"""V2Ray's HTTP header disguise above TCP (and TLS), as a layer.

With ``header.type: "http"`` the client puts an HTTP request header in front of its first
write and skips the response header it gets back; the server reads the request header (at
most 8192 bytes), checks that its path is one of ``request.path`` (404 otherwise) and puts the
response header in front of its first write. A server that closes before writing anything
sends a 400 response, as V2Ray does. The header bytes come from
:mod:`vtwist.transport.tcp.header`; :data:`HTTP_DISGUISE` is the ``IStreamLayer``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.interfaces import IStreamLayer
from vtwist.transport.layer import HalfCloseLayer, LayerClientEndpoint, LayerServerEndpoint
from vtwist.transport.tcp.header import (
    MAX_HEADER_BYTES,
    error_response,
    request_header,
    request_path,
    response_header,
)
from vtwist.transport.tcp.settings import TCPSettings

log = Logger(namespace="vtwist.transport.tcp")

SERVER_HANDSHAKE_TIMEOUT = 4.0


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
        self.handshakeFailed(why, error_response(status, reason))

    def closeLayer(self) -> None:
        """Closing before answering sends 400, like V2Ray."""
        if self.header is not None:
            self.header = None
            self.transport.write(error_response("400", "Bad Request"))
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


# -- the IStreamLayer (vtwist.transport.stack, through the registry) -----------------------
def _disguise(stream: Any) -> TCPSettings | None:
    settings = stream.network_settings.get("tcp")
    if settings is not None and settings.header_type == "http":
        return settings  # type: ignore[no-any-return]
    return None


@implementer(IStreamLayer)
class HTTPDisguiseLayer:
    """The HTTP header disguise above TCP (and TLS) when ``tcpSettings`` asks for it."""

    name = "http header"

    def wrapServer(self, endpoint: IStreamServerEndpoint, settings: Any) -> IStreamServerEndpoint:
        """``endpoint`` expecting the disguise, or unchanged when ``settings`` has none."""
        tcp = _disguise(settings)
        return endpoint if tcp is None else HTTPHeaderServerEndpoint(endpoint, tcp)

    def wrapClient(self, endpoint: IStreamClientEndpoint, settings: Any, host: str, port: int,
                   reactor: Any = None) -> IStreamClientEndpoint:
        """``endpoint`` speaking the disguise, or unchanged when ``settings`` has none."""
        tcp = _disguise(settings)
        return endpoint if tcp is None else HTTPHeaderClientEndpoint(endpoint, tcp)


#: The tcp network's layer (its registry entry names it).
HTTP_DISGUISE = HTTPDisguiseLayer()
