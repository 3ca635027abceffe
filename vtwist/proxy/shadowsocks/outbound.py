"""Shadowsocks outbound: :class:`ShadowsocksClientEndpoint` (a public
``IStreamClientEndpoint``) for TCP, :class:`ShadowsocksPacketSession` for UDP.

The endpoint wraps any transport endpoint (the outbound's dialer: TCP, TLS, WebSocket,
mKCP, or another outbound with proxySettings) and gives the application's protocol a
:class:`~vtwist.proxy.shadowsocks.transport.ShadowsocksTransport`; the salt and the address
ride in the first chunk with the application's first bytes (or alone, one reactor turn after
connecting, when the application writes nothing at once). A close by the server at a chunk
boundary is a normal end.

UDP goes straight to the server's UDP port, one packet per datagram, from one local socket
per session; servers are chosen round robin as V2Ray 4.34 does. With proxySettings the
packets take the proxy outbound's packet path instead (its ``packetSession``, to
``udp:server:port``), as V2Ray 4.34's ``Dial`` sends a ``udp:`` destination through the
proxy handler.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.server_datagrams import ServerDatagrams
from vtwist.proxy.shadowsocks.aead import Account, CipherError, StreamDecoder
from vtwist.proxy.shadowsocks.codec import (
    ClientStream,
    RequestError,
    decode_packet,
    encode_address,
    encode_packet,
)
from vtwist.proxy.shadowsocks.settings import ShadowsocksOutboundSettings, ShadowsocksServer
from vtwist.proxy.shadowsocks.transport import ShadowsocksTransport
from vtwist.reactors import resolve_reactor
from vtwist.tunnel.dialer import direct_dialer, packet_path

log = Logger(namespace="vtwist.shadowsocks.outbound")


@implementer(IHalfCloseableProtocol)
class ShadowsocksClientProtocol(Protocol):
    """Wraps the application's protocol over one Shadowsocks connection."""

    app: Any = None
    inner: ShadowsocksTransport | None = None

    def __init__(self, endpoint: ShadowsocksClientEndpoint, wrapped: Any) -> None:
        self.endpoint = endpoint
        self.wrapped = wrapped
        self.decoder = StreamDecoder(endpoint.account)
        self.stream: ClientStream | None = None
        self.failed: str | None = None
        self.eof = False
        self._timer: Any = None
        self._appLost = False

    def connectionMade(self) -> None:
        """Hand the plain transport to the application; send the address soon."""
        ep = self.endpoint
        self.stream = ClientStream(ep.account, ep.destination)
        self.inner = ShadowsocksTransport(self.transport, self.stream.encode)
        self.app = self.wrapped.buildProtocol(self.transport.getPeer())
        if self.app is None:
            self.transport.loseConnection()
            return
        self.app.makeConnection(self.inner)
        if not self.stream.header_sent:
            self._timer = ep.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self.inner is not None and not self.stream.header_sent:  # type: ignore[union-attr]
            self.inner.flush()

    def dataReceived(self, data: bytes) -> None:
        """The server's chunks, opened, to the application."""
        if self.failed or self.eof:
            return
        try:
            payloads = self.decoder.feed(data)
        except CipherError as e:
            self._fail(str(e))
            return
        if payloads:
            self.app.dataReceived(payloads[0] if len(payloads) == 1 else b"".join(payloads))
        if self.decoder.eof:
            self._endOfStream()

    def _endOfStream(self) -> None:
        if self.eof:
            return
        self.eof = True
        if IHalfCloseableProtocol.providedBy(self.app):
            self.app.readConnectionLost()
        else:
            self.inner.loseConnection()  # type: ignore[union-attr]

    def _fail(self, why: str) -> None:
        self.failed = why
        log.info("shadowsocks to {dest}: {why}", dest=self.endpoint.destination, why=why)
        self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        """The server half-closed: a normal end at a chunk boundary."""
        if self.failed or self.app is None:
            return
        if self.decoder.at_boundary:
            self._endOfStream()
        elif not self.eof:
            self.failed = "connection closed in the middle of a chunk"
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our write side closed."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Tell the application; a close at a chunk boundary is a clean end."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.app is None or self._appLost:
            return
        self._appLost = True
        if self.failed is not None:
            reason = Failure(ConnectionLost(self.failed))
        elif self.eof or self.decoder.at_boundary:
            if reason is None or reason.check(ConnectionDone) or self.eof:
                reason = Failure(ConnectionDone("Shadowsocks stream ended"))
        else:
            reason = Failure(ConnectionLost("Shadowsocks connection closed in the middle "
                                            "of a chunk"))
        self.app.connectionLost(reason)


class _ClientFactory(Factory):
    noisy = False  # one per connection: no 'Starting factory' event each time

    def __init__(self, endpoint: ShadowsocksClientEndpoint, wrapped: Any) -> None:
        self.endpoint = endpoint
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> ShadowsocksClientProtocol:
        return ShadowsocksClientProtocol(self.endpoint, self.wrapped)


@implementer(IStreamClientEndpoint)
class ShadowsocksClientEndpoint:
    """Connect through a Shadowsocks server to ``destination``.

    ``transport_endpoint`` reaches the server; ``account`` is the method and key
    (:meth:`Account.from_password`). Fires with the application's protocol once connected.
    """

    def __init__(self, transport_endpoint: Any, account: Account, destination: Destination,
                 *, reactor: Any = None) -> None:
        self.transport_endpoint = transport_endpoint
        self.account = account
        self.destination = destination
        self.reactor = resolve_reactor(reactor)

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Connect the lower endpoint and start the wrapped protocol on top."""
        try:
            encode_address(self.destination)
        except ValueError as e:
            return fail(ConnectError(f"Shadowsocks cannot carry {self.destination}: {e}"))
        d = self.transport_endpoint.connect(_ClientFactory(self, protocolFactory))

        def unwrap(p: ShadowsocksClientProtocol) -> Any:
            if p.app is None:
                raise ConnectionLost("the protocol factory refused the connection")
            return p.app

        return d.addCallback(unwrap)


@implementer(IPacketSession)
class ShadowsocksPacketSession:
    """UDP through a Shadowsocks server: each datagram one packet to its UDP port, from a
    local socket or, when the outbound is chained (proxySettings), through the proxy
    outbound's packet session (:class:`~vtwist.proxy.server_datagrams.ServerDatagrams`)."""

    def __init__(self, outbound: ShadowsocksOutbound, server: ShadowsocksServer,
                 onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.outbound = outbound
        self.server = server
        self.onPacket = onPacket
        self.onClose = onClose
        self.closed = False
        #: packets from the server that did not open
        self.dropped = 0
        self.datagrams = ServerDatagrams(outbound.reactor, packet_path(outbound.dialer),
                                         self._packet, self._end, "shadowsocks")
        self.datagrams.open(server.address, server.port)

    def send(self, data: bytes, destination: Destination) -> None:
        """Send one datagram to ``destination`` through the server."""
        if self.closed:
            return
        try:
            packet = encode_packet(self.server.account, destination, data)
        except ValueError as e:
            log.info("shadowsocks UDP to {dest}: {e}", dest=destination, e=e)
            return
        self.datagrams.send(packet)

    def _packet(self, data: bytes) -> None:
        """One packet from the server: opened and handed on, or dropped when bad."""
        try:
            packet = decode_packet(self.server.account, data)
            source = Destination.udp(packet.host, packet.port)
        except (RequestError, ValueError) as e:
            self.dropped += 1
            log.debug("shadowsocks UDP: bad packet from the server: {e}", e=e)
            return
        self.onPacket(packet.payload, source)

    def _end(self, why: str) -> None:
        if self.closed:
            return
        log.info("shadowsocks UDP via {server}:{port}: {why}", server=self.server.address,
                 port=self.server.port, why=why)
        self.close()
        self.onClose()

    def close(self) -> None:
        """Close the session's UDP socket (or its proxy outbound's session)."""
        self.closed = True
        self.datagrams.close()


@implementer(IOutbound)
class ShadowsocksOutbound:
    """Sends traffic through Shadowsocks servers (round robin)."""

    def __init__(self, reactor: Any, tag: str, settings: ShadowsocksOutboundSettings,
                 stream: Any = None, dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings
        self.stream = stream
        #: ``(host, port) -> endpoint`` to a server: over ``stream``, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, stream)
        self._servers = itertools.cycle(settings.servers)

    def transportEndpoint(self, server: ShadowsocksServer) -> Any:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)

    def endpointFor(self, destination: Destination) -> ShadowsocksClientEndpoint:
        """A :class:`ShadowsocksClientEndpoint` through the next server."""
        server = next(self._servers)
        return ShadowsocksClientEndpoint(self.transportEndpoint(server), server.account,
                                         destination, reactor=self.reactor)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> ShadowsocksPacketSession:
        """A UDP session through the next server."""
        return ShadowsocksPacketSession(self, next(self._servers), onPacket, onClose)


def build_outbound(outbound: Any, ctx: Any) -> ShadowsocksOutbound:
    """The registry's builder: a ShadowsocksOutbound from its config."""
    return ShadowsocksOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                               ctx.dialer(outbound))
