"""VLESS client: :class:`VLESSClientEndpoint`, a public ``IStreamClientEndpoint``.

It wraps any transport endpoint (TCP, TLS, WebSocket ...) and tunnels one connection to
``destination`` through a VLESS server. The application's protocol gets a
:class:`~vtwist.proxy.vless.transport.VLESSTransport`: the request header goes out with the
first bytes the application writes (alone after ``header_delay``, 100 ms as in 4.34), and the
response header is read before the first payload reaches the application. With ``command``
``CMD_UDP`` each write is one datagram and each datagram received is one ``dataReceived``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.vless.codec import (
    CMD_TCP,
    CMD_UDP,
    PacketDecoder,
    ResponseParser,
    VLESSError,
    encode_request,
)
from vtwist.proxy.vless.settings import VLESSAccount
from vtwist.proxy.vless.transport import VLESSTransport
from vtwist.reactors import resolve_reactor
from vtwist.sansio import NEED_DATA

log = Logger(namespace="vtwist.vless.outbound")

#: How long the 4.34 client waits for the first payload before sending the header alone.
HEADER_DELAY = 0.1


@implementer(IHalfCloseableProtocol)
class VLESSClientProtocol(Protocol):
    """Wraps the application's protocol; owns the VLESS session of one connection."""

    app: Any = None
    inner: VLESSTransport | None = None

    def __init__(self, factory: _VLESSClientFactory) -> None:
        self.factory = factory
        self.response: ResponseParser | None = ResponseParser()
        self.packets: PacketDecoder | None = None
        self.eof = False
        self.failed: str | None = None
        self._timer: Any = None
        self._appLost = False

    def connectionMade(self) -> None:
        """Hand the plain transport to the application; the header waits for its bytes."""
        ep = self.factory.endpoint
        udp = ep.command == CMD_UDP
        if udp:
            self.packets = PacketDecoder()
        self.inner = VLESSTransport(self.transport, ep.header, packet=udp)
        self.app = self.factory.wrapped.buildProtocol(self.transport.getPeer())
        if self.app is None:
            self.transport.loseConnection()
            return
        self._timer = ep.reactor.callLater(ep.header_delay, self._headerTimeout)
        self.app.makeConnection(self.inner)

    def _headerTimeout(self) -> None:
        self._timer = None
        if self.inner is not None and not self.inner.disconnecting:
            self.inner.flushHeader()

    def dataReceived(self, data: bytes) -> None:
        """Response header first, then the payload to the application."""
        if self.failed or self.eof:
            return
        if self.response is not None:
            try:
                got = self.response.feed(data)
            except VLESSError as e:
                self._fail(str(e))
                return
            if got is NEED_DATA:
                return
            self.response = None
            _, data = got
            if not data:
                return
        if self.packets is not None:
            for packet in self.packets.feed(data):
                if packet and self.app is not None:
                    self.app.dataReceived(packet)
        else:
            self.app.dataReceived(data)

    def _fail(self, why: str) -> None:
        self.failed = why
        log.info("vless to {dest}: {why}", dest=self.factory.endpoint.destination, why=why)
        self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        """The server half-closed: the end of the response."""
        if self.failed or self.app is None or self.eof:
            return
        if self.response is not None:
            self.failed = "connection closed before the response header"
            self.transport.loseConnection()
            return
        self.eof = True
        if IHalfCloseableProtocol.providedBy(self.app):
            self.app.readConnectionLost()
        else:
            self.inner.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our write side closed; nothing to tell the application."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Tell the application; a close after the response header is a clean end."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.app is None or self._appLost:
            return
        self._appLost = True
        if self.failed is not None:
            reason = Failure(ConnectionLost(self.failed))
        elif self.response is None and (reason is None or reason.check(ConnectionDone)
                                        or self.eof):
            reason = Failure(ConnectionDone("VLESS stream ended"))
        elif self.response is not None and (reason is None or reason.check(ConnectionDone)):
            reason = Failure(ConnectionLost("VLESS connection closed before the response "
                                            "header"))
        self.app.connectionLost(reason)


class _VLESSClientFactory(Factory):
    def __init__(self, endpoint: VLESSClientEndpoint, wrapped: Any) -> None:
        self.endpoint = endpoint
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> VLESSClientProtocol:
        return VLESSClientProtocol(self)


@implementer(IStreamClientEndpoint)
class VLESSClientEndpoint:
    """Connect through a VLESS server to ``destination`` as ``account``.

    ``transport_endpoint`` reaches the server; ``command`` is ``CMD_TCP`` (default) or
    ``CMD_UDP``. The Deferred fires with the application's protocol once connected.
    """

    def __init__(self, transport_endpoint: Any, account: VLESSAccount,
                 destination: Destination, *, reactor: Any = None, command: int = CMD_TCP,
                 header_delay: float = HEADER_DELAY) -> None:
        self.transport_endpoint = transport_endpoint
        self.account = account
        self.destination = destination
        self.command = command
        self.reactor = resolve_reactor(reactor)
        self.header_delay = header_delay
        self.header = b""

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Connect the lower endpoint, then start the wrapped protocol at once; a
        destination VLESS cannot carry fails at once."""
        try:
            # 4.34 sends no addons (the account's flow is not carried)
            self.header = encode_request(self.account.uuid, self.command, self.destination)
        except ValueError as e:  # UnicodeEncodeError is a ValueError
            return fail(ConnectError(f"VLESS cannot carry {self.destination}: {e}"))
        d = self.transport_endpoint.connect(_VLESSClientFactory(self, protocolFactory))

        def unwrap(p: VLESSClientProtocol) -> Any:
            if p.app is None:
                raise ConnectionLost("the protocol factory refused the connection")
            return p.app

        return d.addCallback(unwrap)
