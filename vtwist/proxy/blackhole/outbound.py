"""The ``blackhole`` outbound: accept and drop, optionally answering HTTP 403."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, IStreamClientEndpoint, ITransport
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.blackhole.settings import BlackholeSettings

HTTP_RESPONSE = (b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"
                 b"Cache-Control: max-age=3600, public\r\nContent-Length: 0\r\n\r\n")


@implementer(ITransport, IConsumer, IPushProducer)
class _DiscardTransport:
    """A transport that swallows writes: the far end of a blackhole."""

    disconnecting = False

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        """Dropped."""

    def writeSequence(self, data: Any) -> None:
        """Dropped."""

    def loseConnection(self) -> None:
        """End the fake connection."""
        if not self.disconnecting:
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def loseWriteConnection(self) -> None:
        """Nothing to half-close."""

    abortConnection = loseConnection

    def getPeer(self) -> IPv4Address:
        """A placeholder address."""
        return IPv4Address("TCP", "0.0.0.0", 0)

    getHost = getPeer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Writes never back up, so producers are never paused."""

    def unregisterProducer(self) -> None:
        """Nothing registered."""

    def pauseProducing(self) -> None:
        """Nothing to pause."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Close."""
        self.loseConnection()


@implementer(IStreamClientEndpoint)
class BlackholeEndpoint:
    """Connects to nothing: the protocol gets the response (if any), then a close."""

    def __init__(self, reactor: Any, response: str) -> None:
        self.reactor = reactor
        self.response = response

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Build the protocol on a discarding transport; close it after the response."""
        protocol = protocolFactory.buildProtocol(None)
        transport = _DiscardTransport(protocol)
        protocol.makeConnection(transport)
        if self.response == "http":
            protocol.dataReceived(HTTP_RESPONSE)
            # V2Ray waits a second after a response so it reaches the client.
            self.reactor.callLater(1, transport.loseConnection)
        else:
            self.reactor.callLater(0, transport.loseConnection)
        return defer.succeed(protocol)


@implementer(IPacketSession)
class _DroppingSession:
    def __init__(self, onClose: Callable[[], None]) -> None:
        self.onClose = onClose

    def send(self, data: bytes, destination: Destination) -> None:
        """Dropped."""

    def close(self) -> None:
        """Nothing to free."""


@implementer(IOutbound)
class BlackholeOutbound:
    """Drops everything."""

    def __init__(self, reactor: Any, tag: str = "", settings: BlackholeSettings | None = None):
        self.reactor = reactor
        self.tag = tag
        self.settings = settings or BlackholeSettings()

    def endpointFor(self, destination: Destination) -> BlackholeEndpoint:
        """An endpoint that goes nowhere."""
        return BlackholeEndpoint(self.reactor, self.settings.response)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> IPacketSession:
        """A session that drops every datagram."""
        return _DroppingSession(onClose)


def build_outbound(outbound: Any, ctx: Any) -> BlackholeOutbound:
    """The registry's builder: a BlackholeOutbound from its config."""
    return BlackholeOutbound(ctx.reactor, outbound.tag, outbound.settings)
