"""HTTP CONNECT client: :class:`HTTPConnectEndpoint`, a public ``IStreamClientEndpoint``.

It wraps any endpoint that reaches an HTTP proxy (TCP, TLS, WebSocket ...), sends V2Ray
4.34's ``CONNECT host:port`` (with ``Proxy-Authorization: Basic`` when given an account) and
then carries the application's protocol. The Deferred fires once the proxy answers 200; bytes
after the response head go to the application. Any other answer fails it with a
:class:`~vtwist.transport.layer.LayerHandshakeError` quoting the status line
(``http: proxy refused CONNECT example.com:443: HTTP/1.1 407 Proxy Authentication
Required``), and logs one line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.http.client_codec import ConnectClient, ConnectError, Established
from vtwist.sansio import NEED_DATA
from vtwist.transport.layer import HalfCloseLayer, LayerClientEndpoint

log = Logger(namespace="vtwist.http.outbound")

#: V2Ray's default handshake timeout (policy level 0).
HANDSHAKE_TIMEOUT = 4.0


class HTTPConnectLayer(HalfCloseLayer):
    """Sends the CONNECT, reads the response head, then is the application's transport."""

    name = "http"
    log = log

    def __init__(self, factory: IProtocolFactory, ready: Deferred[Any] | None, clock: Any,
                 client: ConnectClient, timeout: float | None = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(factory, ready, clock)
        self.client = client
        self.handshakeTimeout = timeout
        self.status_line: str | None = None

    def handshakeStarted(self) -> None:
        """The request goes out at once (HTTP/1.1 only: a TLS ``h2`` is refused)."""
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self.handshakeFailed("TLS negotiated h2, and HTTP/2 CONNECT is not supported "
                                 '(set tlsSettings.alpn to ["http/1.1"])')
            return
        try:
            request = self.client.request()
        except ConnectError as e:
            self.handshakeFailed(str(e))
            return
        self.transport.write(request)

    def handshakeData(self, data: bytes) -> None:
        """The response head: 200 starts the stream, anything else ends it."""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            result = self.client.receive_data(data)
        except ConnectError as e:
            self.handshakeFailed(f"CONNECT {self.client.target}: {e}", abort=bool(data))
            return
        if result is NEED_DATA:
            return
        self.status_line = result.status_line
        if isinstance(result, Established):
            self.handshakeDone(result.trailing)
        else:
            self.handshakeFailed(f"proxy refused CONNECT {self.client.target}: "
                                 f"{result.status_line}")

    def describeFailure(self, reason: Failure) -> str:
        """A close before the response head is complete."""
        return f"CONNECT {self.client.target}: the proxy closed the connection before " \
               f"its response ({super().describeFailure(reason)})"


@implementer(IStreamClientEndpoint)
class HTTPConnectEndpoint:
    """Connect through the HTTP proxy that ``transport_endpoint`` reaches, with ``CONNECT``.

    ``credentials`` is ``(user, password)`` for ``Proxy-Authorization: Basic``; ``timeout``
    bounds the time until the response head.
    """

    def __init__(self, transport_endpoint: Any, destination: Destination, *,
                 credentials: tuple[str, str] | None = None, reactor: Any = None,
                 timeout: float | None = HANDSHAKE_TIMEOUT) -> None:
        self.transport_endpoint = transport_endpoint
        self.destination = destination
        self.credentials = credentials
        self.reactor = reactor
        self.timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        """Connect below, CONNECT, then start the application's protocol."""
        target = self.destination.hostport

        def make(factory: IProtocolFactory, ready: Deferred[Any]) -> HTTPConnectLayer:
            return HTTPConnectLayer(factory, ready, self.reactor,
                                    ConnectClient(target, self.credentials), self.timeout)

        return LayerClientEndpoint(self.transport_endpoint, make).connect(protocolFactory)
