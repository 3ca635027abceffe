"""The ``blackhole`` outbound: accept and drop, optionally answering HTTP 403."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.blackhole.settings import BlackholeSettings
from vtwist.proxy.local import LocalTransport

HTTP_RESPONSE = (b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"
                 b"Cache-Control: max-age=3600, public\r\nContent-Length: 0\r\n\r\n")


@implementer(IStreamClientEndpoint)
class BlackholeEndpoint:
    """Connects to nothing: the protocol gets the response (if any), then a close."""

    def __init__(self, reactor: Any, response: str) -> None:
        self.reactor = reactor
        self.response = response

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Build the protocol on a discarding transport; close it after the response."""
        protocol = protocolFactory.buildProtocol(None)
        transport = LocalTransport(protocol)
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
