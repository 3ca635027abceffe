"""The far end of a connection that an outbound answers in-process (blackhole, dns).

:class:`LocalTransport` is the transport such an outbound gives the application's protocol:
writes go to :meth:`~LocalTransport.write` (dropped unless a subclass handles them), closing
tells the protocol at once, and nothing ever backs up, so producers are never paused.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(ITransport, IConsumer, IPushProducer)
class LocalTransport:
    """A connection with nothing below it; subclasses answer what is written."""

    disconnecting = False

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        """Dropped (subclasses handle the application's bytes)."""

    def writeSequence(self, data: Any) -> None:
        """Each piece through :meth:`write`."""
        for piece in data:
            self.write(piece)

    def closing(self) -> None:
        """Hook: the connection is about to end (free what the subclass holds)."""

    def loseConnection(self) -> None:
        """End the connection: the protocol hears of it at once."""
        if not self.disconnecting:
            self.disconnecting = True
            self.closing()
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def loseWriteConnection(self) -> None:
        """Nothing to half-close."""

    def abortConnection(self) -> None:
        """The same as :meth:`loseConnection`: nothing is buffered."""
        self.loseConnection()

    def getPeer(self) -> IPv4Address:
        """A placeholder address."""
        return IPv4Address("TCP", "0.0.0.0", 0)

    def getHost(self) -> IPv4Address:
        """A placeholder address."""
        return self.getPeer()

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
