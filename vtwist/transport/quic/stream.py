"""One QUIC stream as a Twisted transport: what one proxied connection rides.

It is the stream protocol's transport (``ITransport`` with ``loseWriteConnection`` and
``abortConnection``), a push producer (the protocol pausing it stops the reading: received
bytes wait here and the stream's receive window stops growing, so the peer's sender stops
after one window) and a consumer (a producer writing into it is paused while the stream's
unacknowledged send buffer is above :data:`HIGH_WATER`).

Closing: ``loseWriteConnection`` sends FIN; a FIN from the peer is ``readConnectionLost``
for a half-closeable protocol (else the stream closes); ``loseConnection`` sends FIN and
STOP_SENDING when the peer has not finished; a RESET_STREAM or STOP_SENDING from the peer
loses the connection. The session keeps a finished stream's entry until aioquic forgets
the stream, so late frames for it are swallowed, never taken for a new stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import error
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from vtwist.transport.quic.connection import QuicSession

#: Pause a producer writing into the stream above this many unacknowledged bytes ...
HIGH_WATER = 1 << 20
#: ... and resume it below this many.
LOW_WATER = 1 << 18


@implementer(ITransport, IConsumer, IPushProducer)
class QuicStreamTransport:
    """The transport of one QUIC stream of a :class:`~.connection.QuicSession`."""

    def __init__(self, session: QuicSession, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.protocol: Any = None
        self.connected = False
        self.disconnecting = False
        self.producer: Any = None
        self.streamingProducer = False
        self._producerPaused = False
        self._readPaused = False
        self._pending: list[bytes] = []
        self._delivering = False
        self._flushCall: Any = None
        self._pendingFin = False
        self.finSent = False
        self.finReceived = False
        self.dead = False

    # -- set-up -----------------------------------------------------------------------
    def start(self, proto: Any) -> None:
        """Attach ``proto`` and run its connectionMade."""
        self.protocol = proto
        self.connected = True
        proto.makeConnection(self)

    # -- ITransport ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue ``data`` on the stream."""
        if self.dead or self.finSent or not data:
            return
        quic = self.session.quic
        try:
            quic.send_stream_data(self.stream_id, bytes(data))
        except Exception as e:  # noqa: BLE001 - a stream aioquic refuses (reset, closed)
            self._lose(Failure(error.ConnectionLost(f"QUIC stream: {e}")))
            return
        self.session.schedule()
        if self.producer is not None and not self._producerPaused and \
                quic.send_backlog(self.stream_id) > HIGH_WATER:
            self._producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        """Queue each piece."""
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Send FIN after what is queued (a half-close)."""
        if self.dead or self.finSent:
            return
        self.finSent = True
        try:
            self.session.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        except Exception:  # noqa: BLE001 - already reset
            pass
        self.session.schedule()
        if self.finReceived:
            self._lose(Failure(error.ConnectionDone()))

    def loseConnection(self) -> None:
        """Send FIN, stop the peer's sending if it has not finished, then close."""
        if self.dead or self.disconnecting:
            return
        self.disconnecting = True
        self.loseWriteConnection()
        if not self.dead:
            if not self.finReceived:
                self._stopReceiving()
            self._lose(Failure(error.ConnectionDone()))

    def abortConnection(self) -> None:
        """Reset both directions at once."""
        if self.dead:
            return
        quic = self.session.quic
        try:
            quic.reset_stream(self.stream_id, 0)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if not self.finReceived:
            self._stopReceiving()
        self.session.schedule()
        self._lose(Failure(error.ConnectionAborted()))

    def getPeer(self) -> Any:
        """The QUIC peer's UDP address."""
        return self.session.peer

    def getHost(self) -> Any:
        """The local UDP address."""
        return self.session.host

    # -- IConsumer ------------------------------------------------------------------------
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Pause ``producer`` while the send buffer is full."""
        self.producer = producer
        self.streamingProducer = streaming
        self._producerPaused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # -- IPushProducer (the protocol pausing our reading) --------------------------------
    def pauseProducing(self) -> None:
        """Hold received bytes (the receive window stops growing)."""
        self._readPaused = True

    def resumeProducing(self) -> None:
        """Deliver held bytes (from the reactor, as TCP does: never inside the protocol's
        own call), let the window grow again."""
        if not self._readPaused:
            return
        self._readPaused = False
        if (self._pending or self._pendingFin) and self._flushCall is None:
            self._flushCall = self.session.reactor.callLater(0, self._flush)
        self.session.schedule()

    def _flush(self) -> None:
        self._flushCall = None
        while self._pending and not self._readPaused and not self.dead:
            self._deliver(self._pending.pop(0))
        if not self._pending and self._pendingFin and not self._readPaused:
            self._pendingFin = False
            self._fin()
        self.session.schedule()

    def stopProducing(self) -> None:
        """Close the stream."""
        self.loseConnection()

    # -- from the session -----------------------------------------------------------------
    def received(self, data: bytes, end_stream: bool) -> None:
        """Bytes (and maybe FIN) from the peer."""
        if self.dead:
            self.session.quic.consumed[self.stream_id] = \
                self.session.quic.consumed.get(self.stream_id, 0) + len(data)
            return
        hold = self._readPaused or bool(self._pending) or self._delivering
        if data:
            if hold:
                self._pending.append(data)
            else:
                self._deliver(data)
        if end_stream:
            if hold or self._pending:
                self._pendingFin = True
            else:
                self._fin()
        if hold and not self._readPaused and self._flushCall is None:
            self._flushCall = self.session.reactor.callLater(0, self._flush)

    def _deliver(self, data: bytes) -> None:
        quic = self.session.quic
        quic.consumed[self.stream_id] = quic.consumed.get(self.stream_id, 0) + len(data)
        self._delivering = True
        try:
            self.protocol.dataReceived(data)
        finally:
            self._delivering = False

    def _fin(self) -> None:
        if self.dead or self.finReceived:
            return
        self.finReceived = True
        if self.finSent:
            self._lose(Failure(error.ConnectionDone()))
            return
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.loseConnection()

    def peerReset(self) -> None:
        """The peer reset its sending side."""
        if self.dead:
            return
        try:
            self.session.quic.reset_stream(self.stream_id, 0)
        except Exception:  # noqa: BLE001
            pass
        self.session.schedule()
        self._lose(Failure(error.ConnectionLost("QUIC stream reset by the peer")))

    def peerStopped(self) -> None:
        """The peer will read no more (STOP_SENDING)."""
        if self.dead:
            return
        if not self.finReceived:
            self._stopReceiving()
        self.session.schedule()
        self._lose(Failure(error.ConnectionLost("QUIC stream stopped by the peer")))

    def sent(self) -> None:
        """After a pump: resume a paused producer once the send buffer has drained;
        forget the stream when it is done and aioquic has forgotten it too."""
        if self.dead:
            if not self.session.quic.has_stream(self.stream_id):
                self.session.forget(self.stream_id)
            return
        if self.producer is None:
            return
        backlog = self.session.quic.send_backlog(self.stream_id)
        if self._producerPaused and backlog < LOW_WATER:
            self._producerPaused = False
            self.producer.resumeProducing()
        elif not self.streamingProducer and backlog < LOW_WATER:
            self.producer.resumeProducing()

    def lost(self, reason: Failure) -> None:
        """The whole QUIC connection is gone."""
        self._lose(reason)

    # -- internals ------------------------------------------------------------------------
    def _stopReceiving(self) -> None:
        try:
            self.session.quic.stop_stream(self.stream_id, 0)
        except Exception:  # noqa: BLE001 - aioquic forgot the stream already
            pass

    def _lose(self, reason: Failure) -> None:
        if self.dead:
            return
        self.dead = True
        self.connected = False
        self._pending.clear()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        producer, self.producer = self.producer, None
        if producer is not None and self.streamingProducer:
            try:
                producer.stopProducing()
            except Exception:  # noqa: BLE001 - a producer already stopped
                pass
        proto, self.protocol = self.protocol, None
        if proto is not None:
            proto.connectionLost(reason)
