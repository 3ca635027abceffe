"""One HTTP/2 stream as the transport of an application protocol (see
:mod:`vtwist.transport.h2.connection` for the connection carrying it and the flow control)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.reactors import resolve_reactor
from vtwist.transport.h2.profile import Codec

if TYPE_CHECKING:
    from vtwist.transport.h2.connection import H2Protocol

log = Logger(namespace="vtwist.transport.h2")

HIGH_WATER = 256 * 1024  # a stream's unsent bytes past which its producer is paused
LOW_WATER = 64 * 1024  # ... and below which it is resumed


class SendBuffer:
    """Bytes waiting to be sent, as the chunks written (no copying until a chunk is split)."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        """Queue ``data``."""
        self.chunks.append(data)
        self.size += len(data)

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the front (a whole chunk when it fits)."""
        chunk = self.chunks.popleft()
        if len(chunk) > limit:
            self.chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self.size -= len(chunk)
        return chunk

    def clear(self) -> None:
        """Drop everything."""
        self.chunks.clear()
        self.size = 0


@implementer(ITransport, IConsumer, IPushProducer)
class H2Stream:
    """One HTTP/2 stream as the transport of an application protocol."""

    def __init__(self, connection: H2Protocol, stream_id: int, codec: Codec,
                 peer: Any = None) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.codec = codec
        self.peer = peer
        self.app: Any = None
        self.disconnecting = False
        self.connected = True
        self.buffer = SendBuffer()  # encoded body bytes waiting for the peer's window
        self.closing = False  # end our side once the buffer is out
        self.fullClose = False  # ... and stop the peer too
        self.localEnded = False
        self.remoteEnded = False  # the peer's END_STREAM arrived
        self.remoteEndDelivered = False
        self.paused = False  # the application paused us: deliver and acknowledge nothing
        self.pending: deque[tuple[bytes, int]] = deque()
        self._drainCall: Any = None
        self.producer: Any = None
        self.streaming = True
        self.producerPaused = False
        self.finished = False
        self.error: str | None = None  # why the stream failed (a reset, a bad trailer ...)
        #: A client's: the application's factory and the Deferred its connect returned.
        self.factory: IProtocolFactory | None = None
        self.ready: Deferred | None = None

    # -- from the connection ---------------------------------------------------------------
    def attach(self, app: Any) -> None:
        """Connect ``app`` to this stream."""
        self.app = app
        app.makeConnection(self)

    def dataFromPeer(self, data: bytes, flow: int) -> None:
        """DATA for this stream: deliver it and acknowledge, or keep it while paused."""
        if self.finished:
            self.connection.acknowledge(flow, self.stream_id)
            return
        if self.paused or self.pending or self.app is None or self._drainCall is not None:
            self.pending.append((data, flow))
            return
        self._deliver(data, flow)

    def _deliver(self, data: bytes, flow: int) -> None:
        try:
            payload = self.codec.decode(data) if data else b""
        except ValueError as e:
            self.error = f"bad {self.connection.profile.name} stream data: {e}"
            self.connection.log.info("{why} from {peer}", why=self.error,
                                     peer=self.connection.peerText())
            self.reset(ErrorCodes.PROTOCOL_ERROR)
            return
        if payload and self.app is not None:
            self.app.dataReceived(payload)
        if flow:
            self.connection.acknowledge(flow, self.stream_id)

    def endFromPeer(self) -> None:
        """The peer's END_STREAM (after any data still held)."""
        self.remoteEnded = True
        if self._drainCall is None:
            self._drain()

    def resetByPeer(self, code: int) -> None:
        """RST_STREAM: after the peer's END_STREAM a NO_ERROR/CANCEL only stops our sending;
        otherwise the stream is dead."""
        self.localEnded = True
        self.buffer.clear()
        if self.remoteEnded and code in (ErrorCodes.NO_ERROR, ErrorCodes.CANCEL):
            self._drain()
            self._maybeFinish()
            return
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = str(code)
        self.error = self.error or f"stream reset by peer ({name})"
        self.pending.clear()
        self.finish()

    def _drain(self) -> None:
        while self.pending and not self.paused and not self.finished:
            data, flow = self.pending.popleft()
            self._deliver(data, flow)
        if (self.remoteEnded and not self.pending and not self.paused
                and not self.remoteEndDelivered and not self.finished):
            self.remoteEndDelivered = True
            if self.app is not None and IHalfCloseableProtocol.providedBy(self.app):
                self.app.readConnectionLost()
                self._maybeFinish()
            else:
                self.loseConnection()

    def _maybeFinish(self) -> None:
        if self.localEnded and self.remoteEndDelivered:
            self.finish()

    def finish(self, reason: Failure | None = None) -> None:
        """The stream is over: tell the application once."""
        if self.finished:
            return
        self.finished = True
        self.connected = False
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self.disconnecting = True
        self.buffer.clear()
        self.connection.streamFinished(self)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            if self.streaming and not self.closing:
                producer.stopProducing()
        if reason is None:
            if self.error is not None:
                reason = Failure(error.ConnectionLost(self.error))
            else:
                reason = Failure(error.ConnectionDone(f"{self.connection.profile.name} "
                                                      "stream closed"))
        app, self.app = self.app, None
        if app is not None:
            app.connectionLost(reason)

    # -- sending ---------------------------------------------------------------------------
    def sent(self) -> None:
        """Some of the buffer went out (the connection calls this after a flush)."""
        if self.closing and not self.buffer and not self.localEnded and not self.finished:
            self.localEnded = True
            self.connection.endStream(self)
            if self.fullClose and not self.remoteEndDelivered:
                self.pending.clear()
                self.remoteEndDelivered = True
                self.connection.resetStream(self.stream_id, self.connection.closeCode)
            self._maybeFinish()
            return
        if (self.producer is not None and self.producerPaused
                and len(self.buffer) < LOW_WATER):
            self.producerPaused = False
            self.producer.resumeProducing()

    # -- ITransport for the application ----------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue ``data`` (encoded by the profile) and send what the windows allow."""
        if not data or self.closing or self.finished:
            return
        self.buffer.append(self.codec.encode(bytes(data)))
        self.connection.wantSend(self)
        self.connection.flush()
        if (len(self.buffer) > HIGH_WATER and self.producer is not None
                and self.streaming and not self.producerPaused):
            self.producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        """Queue several buffers as one write."""
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: end our side once buffered bytes are out; the peer may go on."""
        if self.closing or self.finished:
            return
        self.closing = True
        self.connection.wantSend(self)
        self.sent()

    def loseConnection(self) -> None:
        """Send what is buffered, end our side, and stop the peer if it still sends."""
        if self.finished:
            return
        self.disconnecting = True
        self.fullClose = True
        if not self.closing:
            self.closing = True
            self.connection.wantSend(self)
            self.sent()
        elif self.localEnded:
            if not self.remoteEndDelivered:
                self.pending.clear()
                self.remoteEndDelivered = True
                self.connection.resetStream(self.stream_id, self.connection.closeCode)
            self._maybeFinish()

    def abortConnection(self) -> None:
        """Reset the stream now."""
        self.reset(ErrorCodes.CANCEL)

    def reset(self, code: int) -> None:
        """Reset the stream with ``code`` and finish."""
        if self.finished:
            return
        self.disconnecting = True
        self.connection.resetStream(self.stream_id, code)
        # With an error (a refusal, bad data) the application is told why; else it aborted.
        self.finish(None if self.error is not None else Failure(error.ConnectionAborted()))

    def getPeer(self) -> Any:
        """The client (X-Forwarded-For when given) or the server."""
        return self.peer if self.peer is not None else self.connection.transport.getPeer()

    def getHost(self) -> Any:
        """The connection's local address."""
        return self.connection.transport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """The application's producer, paused while our buffer is over ``HIGH_WATER``."""
        self.producer = producer
        self.streaming = streaming
        self.producerPaused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # -- IPushProducer: the application as our consumer -------------------------------------
    def pauseProducing(self) -> None:
        """Hold what arrives and acknowledge nothing: the peer stops at the window."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Deliver what was held (acknowledging it), then whatever comes.

        Held bytes are delivered from the reactor, not inside this call, as a TCP transport
        would: a caller resuming us may still have bytes of its own to pass on first (the
        tunnel's held early input).
        """
        if not self.paused:
            return
        self.paused = False
        if (self.pending or self.remoteEnded) and self._drainCall is None:
            clock = resolve_reactor(self.connection.clock)
            self._drainCall = clock.callLater(0, self._drainLater)

    def _drainLater(self) -> None:
        self._drainCall = None
        self._drain()
        self.connection.writeOut()

    def stopProducing(self) -> None:
        """The consumer is gone: close."""
        self.loseConnection()

    def logPrefix(self) -> str:
        """Log lines name the profile."""
        return self.connection.profile.name
