"""Two protocols joined in memory, each seeing the other through an ordinary transport.

The reverse proxy runs Mux.Cool on a connection the tunnel service relays: on the bridge the
mux server is the *inbound* side of a tunnel, on the portal the mux client is what the
portal outbound *connects*. :func:`connect_pair` gives both protocols a :class:`PipeEnd`:
``write`` on one end is ``dataReceived`` on the other (on a later reactor turn, so no call
ever re-enters its writer), ``loseWriteConnection`` a half-close, ``loseConnection`` a close
after what was written, ``abortConnection`` an immediate close.

Flow control is the transports' usual one: an end whose protocol paused it
(``pauseProducing``) holds what arrives; past :data:`PIPE_BUFFER` held bytes the producer
registered on the writing end is paused, and resumed once the reader drained.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["PIPE_BUFFER", "PipeEnd", "connect_pair"]

#: Bytes an end holds for a paused reader before its writer is paused.
PIPE_BUFFER = 64 * 1024


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class PipeEnd:
    """One end of an in-memory connection (see the module docstring)."""

    def __init__(self, clock: Any, host: Any, peer: Any) -> None:
        self.clock = clock
        self._host = host
        self._peerAddress = peer
        self.other: PipeEnd | None = None
        self.protocol: Any = None
        #: the producer feeding this end's writes, and whether we paused it
        self.producer: Any = None
        self.producerPaused = False
        #: our protocol paused us: hold what arrives
        self.paused = False
        self.inbox: deque[bytes] = deque()
        self.held = 0
        self._flushCall: Any = None
        #: the other end half-closed / closed (delivered after the inbox)
        self.inputEnded = False
        self.closeReason: Failure | None = None
        self.writeClosed = False
        self.disconnecting = False
        self.disconnected = False

    # -- ITransport ---------------------------------------------------------------------
    def write(self, data: Any) -> None:
        """Deliver ``data`` to the other end's protocol."""
        if self.writeClosed or self.disconnecting or self.disconnected or not data:
            return
        other = self.other
        if other is not None and not other.disconnected:
            other._receive(bytes(data))

    def writeSequence(self, data: Any) -> None:
        """Deliver the pieces, joined."""
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: the other end reads EOF after what was written."""
        if self.writeClosed or self.disconnected:
            return
        self.writeClosed = True
        if self.other is not None:
            self.other._inputEnd(None)
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            self.clock.callLater(0, half.writeConnectionLost)

    def loseConnection(self) -> None:
        """Close once the other end has read what was written."""
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self.writeClosed = True
        if self.other is not None:
            self.other._inputEnd(Failure(ConnectionDone()))
        self._lost(Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        """Close both ends now, dropping what is held."""
        if self.disconnected:
            return
        self.disconnecting = True
        other = self.other
        self._lost(Failure(ConnectionAborted()))
        if other is not None and not other.disconnected:
            other.inbox.clear()
            other.held = 0
            other._lost(Failure(ConnectionAborted()))

    def getPeer(self) -> Any:
        """The address given for the other side."""
        return self._peerAddress

    def getHost(self) -> Any:
        """The address given for this side."""
        return self._host

    # -- IConsumer ----------------------------------------------------------------------
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """``producer`` feeds our writes; paused while the other end holds too much."""
        self.producer = producer
        self.producerPaused = False
        if self.other is not None and self.other.held > PIPE_BUFFER and streaming:
            self.producerPaused = True
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # -- IPushProducer: our protocol's consumer says stop ---------------------------------
    def pauseProducing(self) -> None:
        """Hold what arrives."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Deliver what is held."""
        if not self.paused:
            return
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        """Stop for good: close."""
        self.loseConnection()

    # -- delivery -------------------------------------------------------------------------
    def _receive(self, data: bytes) -> None:
        self.inbox.append(data)
        self.held += len(data)
        if self.held > PIPE_BUFFER:
            writer = self.other
            if writer is not None and writer.producer is not None \
                    and not writer.producerPaused:
                writer.producerPaused = True
                writer.producer.pauseProducing()
        self._schedule()

    def _inputEnd(self, reason: Failure | None) -> None:
        self.inputEnded = True
        if reason is not None:
            self.closeReason = reason
        self._schedule()

    def _schedule(self) -> None:
        if self._flushCall is None and not self.disconnected:
            self._flushCall = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushCall = None
        while self.inbox and not self.paused and not self.disconnected:
            data = self.inbox.popleft()
            self.held -= len(data)
            self.protocol.dataReceived(data)
        writer = self.other
        if writer is not None and writer.producerPaused and self.held <= PIPE_BUFFER // 2:
            writer.producerPaused = False
            if writer.producer is not None:
                writer.producer.resumeProducing()
        if self.inbox or self.disconnected or not self.inputEnded:
            return
        reason, self.closeReason = self.closeReason, None
        self.inputEnded = False
        if reason is not None:
            self._lost(reason)
            return
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.loseConnection()

    def _lost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.disconnecting = True
        self.writeClosed = True
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        other = self.other
        if other is not None and not other.disconnected:
            other._inputEnd(Failure(ConnectionDone()) if reason.check(ConnectionDone)
                            else reason)
        protocol, self.producer = self.protocol, None
        self.clock.callLater(0, protocol.connectionLost, reason)


def connect_pair(clock: Any, one: Any, two: Any, one_address: Any = None,
                 two_address: Any = None) -> tuple[PipeEnd, PipeEnd]:
    """Connect protocols ``one`` and ``two``; returns their transports (``one``'s first).
    ``connectionMade`` runs on ``one`` first."""
    a = one_address or IPv4Address("TCP", "127.0.0.1", 0)
    b = two_address or IPv4Address("TCP", "127.0.0.1", 0)
    end_one, end_two = PipeEnd(clock, a, b), PipeEnd(clock, b, a)
    end_one.other, end_two.other = end_two, end_one
    end_one.protocol, end_two.protocol = one, two
    one.makeConnection(end_one)
    two.makeConnection(end_two)
    return end_one, end_two
