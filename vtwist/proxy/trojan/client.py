"""Trojan client: :class:`TrojanClientEndpoint`, a public ``IStreamClientEndpoint``.

It wraps the endpoint that reaches the Trojan server (TLS, ws+TLS ...) and tunnels one
connection to ``destination``. The request header goes out with the first bytes the
application writes (within ``header_delay``, 100 ms as in 4.34; after that alone). After it,
a TCP connection is the application's stream as it is; a UDP one (``udp=True``) frames each
``write`` as one datagram and delivers each datagram the server sends as one
``dataReceived``. Half-close passes through.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.trojan.codec import (
    CMD_TCP,
    CMD_UDP,
    PacketDecoder,
    TrojanError,
    encode_packet,
    encode_request,
)
from vtwist.reactors import resolve_reactor
from vtwist.transport.layer import HalfCloseLayer, LayerClientEndpoint

#: How long 4.34's client waits for the first payload before sending the request alone.
HEADER_DELAY = 0.1


class TrojanClientLayer(HalfCloseLayer):
    """The Trojan request on the way out, then the plain stream (or framed datagrams)."""

    name = "trojan"

    def __init__(self, factory: Any, ready: Deferred | None, endpoint: TrojanClientEndpoint
                 ) -> None:
        super().__init__(factory, ready, endpoint.reactor)
        self.endpoint = endpoint
        self.header: bytes | None = endpoint.header
        self.decoder = PacketDecoder() if endpoint.udp else None
        self._headerTimer: Any = None

    def handshakeStarted(self) -> None:
        """Nothing to wait for: the application starts now; the header waits for its bytes."""
        self._headerTimer = self.endpoint.reactor.callLater(self.endpoint.header_delay,
                                                            self.flushHeader)
        self.handshakeDone()

    def flushHeader(self) -> None:
        """Send the request header alone (the application wrote nothing in time)."""
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None
        if self.header is not None and not self.disconnecting and self.transport is not None:
            header, self.header = self.header, None
            self.transport.write(header)

    def _withHeader(self, data: bytes) -> bytes:
        header, self.header = self.header, None
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None
        return header + data  # type: ignore[operator]

    # -- outgoing ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Application bytes (one datagram per call for UDP), the header before the first."""
        if self.decoder is not None:
            data = encode_packet(self.endpoint.destination, bytes(data))
        if self.header is not None:
            data = self._withHeader(data)
        self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        """Several buffers (one datagram each for UDP)."""
        if self.decoder is not None:
            for item in data:
                self.write(item)
        elif self.header is not None:
            self.write(b"".join(data))
        else:
            self.transport.writeSequence(data)

    def loseWriteConnection(self) -> None:
        """Half-close; the request goes out first if nothing was written yet."""
        self.flushHeader()
        super().loseWriteConnection()

    # -- incoming ----------------------------------------------------------------------------
    def streamData(self, data: bytes) -> None:
        """The server's bytes: as they are, or unframed into datagrams."""
        if self.decoder is None:
            self.app.dataReceived(data)
            return
        try:
            packets = self.decoder.feed(data)
        except TrojanError as e:
            self.log.info("trojan UDP from {dest}: {why}", dest=self.endpoint.destination, why=e)
            self.transport.abortConnection()
            return
        for packet in packets:
            if self.app is None:
                return
            self.app.dataReceived(packet.payload)

    def connectionLost(self, reason: Any = None) -> None:
        """Stop the header timer; tell the application."""
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None
        super().connectionLost(reason)


@implementer(IStreamClientEndpoint)
class TrojanClientEndpoint:
    """Connect through a Trojan server to ``destination``.

    ``transport_endpoint`` reaches the server; ``key`` is the hex SHA-224 of the password
    (:func:`~vtwist.proxy.trojan.codec.password_key`). ``udp`` makes it a UDP request whose
    datagrams all go to ``destination``. The Deferred fires with the application's protocol
    as soon as the transport below is connected.
    """

    def __init__(self, transport_endpoint: Any, key: bytes, destination: Destination, *,
                 udp: bool = False, reactor: Any = None,
                 header_delay: float = HEADER_DELAY) -> None:
        self.transport_endpoint = transport_endpoint
        self.key = key
        self.destination = destination
        self.udp = udp
        self.reactor = resolve_reactor(reactor)
        self.header_delay = header_delay
        self.header = b""

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Connect below and start the application at once; a destination Trojan cannot
        carry fails before any connection is made."""
        try:
            self.header = encode_request(self.key, CMD_UDP if self.udp else CMD_TCP,
                                         self.destination)
        except TrojanError as e:
            return fail(ConnectError(str(e)))
        return LayerClientEndpoint(
            self.transport_endpoint,
            lambda factory, ready: TrojanClientLayer(factory, ready, self),
        ).connect(protocolFactory)
