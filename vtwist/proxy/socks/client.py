"""SOCKS5 client: :class:`SocksClientEndpoint`, a public ``IStreamClientEndpoint``.

It wraps any endpoint that reaches a SOCKS5 server (TCP, TLS, WebSocket, mKCP ...), runs the
handshake of V2Ray 4.34's client (one auth method offered: password when there is an account,
the credentials sent with the greeting; then ``CONNECT`` or ``UDP ASSOCIATE``) and then carries
the application's protocol. The Deferred fires once the server's reply says success; a refusal
fails it with a :class:`~vtwist.transport.layer.LayerHandshakeError` that names the reply
(``socks: server refused the CONNECT to tcp:example.com:80: connection refused (5)``), and
logs one line.

Fetching a page through a SOCKS5 proxy with ``twisted.web.client.Agent``::

    @implementer(IAgentEndpointFactory)
    class ThroughSocks:
        def endpointForURI(self, uri):
            proxy = HostnameEndpoint(reactor, "127.0.0.1", 1080)
            dest = Destination.tcp(uri.host.decode(), uri.port)
            return SocksClientEndpoint(proxy, dest, username=b"alice", password=b"s3cret")

    Agent.usingEndpointFactory(reactor, ThroughSocks()).request(b"GET", b"http://example.com/")
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.socks.client_codec import ClientHandshake, HandshakeFailed
from vtwist.proxy.socks.codec import (
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    LocalProtocolError,
    ProtocolError,
    Reply,
    encode_address,
)
from vtwist.transport.layer import HalfCloseLayer, LayerClientEndpoint

log = Logger(namespace="vtwist.socks.outbound")

#: V2Ray's default handshake timeout (policy level 0).
HANDSHAKE_TIMEOUT = 4.0


class SocksClientLayer(HalfCloseLayer):
    """Runs the SOCKS5 client handshake, then is the application's transport.

    After the handshake :attr:`reply` holds the server's :class:`Reply` (for UDP ASSOCIATE:
    the relay address datagrams go to).
    """

    name = "socks"
    log = log

    def __init__(self, factory: IProtocolFactory, ready: Deferred[Any] | None,
                 clock: Any, handshake: ClientHandshake, destination: Destination,
                 timeout: float | None = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(factory, ready, clock)
        self.handshake = handshake
        self.destination = destination
        self.handshakeTimeout = timeout
        self.reply: Reply | None = None

    def handshakeStarted(self) -> None:
        """Greeting (and credentials) go out at once."""
        self.transport.write(self.handshake.initiate())

    def handshakeData(self, data: bytes) -> None:
        """The server's answers; the request once auth is done; success starts the stream."""
        try:
            out = self.handshake.receive_data(data)
        except HandshakeFailed as e:
            self.handshakeFailed(self._describe(e.why))
            return
        except (ProtocolError, LocalProtocolError) as e:
            self.handshakeFailed(f"bad answer from the server: {e}", abort=True)
            return
        if out:
            self.transport.write(out)
        if self.handshake.established:
            self.reply = self.handshake.reply
            self.handshakeDone(self.handshake.codec.take_trailing_data())

    def _describe(self, why: str) -> str:
        """Put the destination into a refusal: ``... the CONNECT to tcp:host:port: ...``."""
        verb = "CONNECT" if self.handshake.request.command == CMD_CONNECT else "request"
        prefix = f"server refused the {verb}: "
        if why.startswith(prefix):
            return f"server refused the {verb} to {self.destination}: {why[len(prefix):]}"
        return why


@implementer(IStreamClientEndpoint)
class SocksClientEndpoint:
    """Connect through the SOCKS5 server that ``transport_endpoint`` reaches.

    ``destination`` is where the server connects (``CONNECT``); with
    ``command=CMD_UDP_ASSOCIATE`` the connection is the association's control connection and
    the application's transport (a :class:`SocksClientLayer`) has the relay in ``reply``.
    ``username`` (bytes) makes it offer password auth. ``timeout`` bounds the handshake.
    """

    def __init__(self, transport_endpoint: Any, destination: Destination, *,
                 username: bytes | None = None, password: bytes = b"",
                 command: int = CMD_CONNECT, reactor: Any = None,
                 timeout: float | None = HANDSHAKE_TIMEOUT) -> None:
        self.transport_endpoint = transport_endpoint
        self.destination = destination
        self.username = username
        self.password = password
        self.command = command
        self.reactor = reactor
        self.timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        """Connect below, run the handshake, then start the application's protocol.

        A destination SOCKS5 cannot carry (a domain over 255 bytes) fails at once.
        """
        dest = self.destination
        if self.command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
            return fail(ConnectError(f"SOCKS command {self.command} is not supported"))
        try:
            encode_address(dest.host, dest.port)
        except ValueError as e:  # UnicodeError is a ValueError
            return fail(ConnectError(f"SOCKS5 cannot carry {dest}: {e}"))

        def make(factory: IProtocolFactory, ready: Deferred[Any]) -> SocksClientLayer:
            handshake = ClientHandshake(self.command, dest.host, dest.port,
                                        self.username, self.password)
            return SocksClientLayer(factory, ready, self.reactor, handshake, dest,
                                    self.timeout)

        return LayerClientEndpoint(self.transport_endpoint, make).connect(protocolFactory)
