"""A protocol layer that is also the transport of the application protocol above it.

TLS, WebSocket and the HTTP header disguise are each a :class:`Layer`: it speaks its own
handshake on the transport below, then builds the application's protocol and acts as that
protocol's transport (write, writeSequence, loseConnection, getPeer/getHost, producer
registration and pause/resume passing through). :class:`LayerServerEndpoint` and
:class:`LayerClientEndpoint` turn a layer class into endpoint wrappers, so VMess and the relay
run over any stack of them unchanged. The client's ``connect`` fires once the layer's handshake
is done, and fails with :class:`LayerHandshakeError` naming the reason when it is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import format_address
from vtwist.reactors import resolve_reactor
from vtwist.transport.passthrough import PassThroughMixin


def set_no_delay(transport: Any) -> None:
    """Disable Nagle on ``transport`` if it is (or wraps) a TCP socket, as Go (V2Ray) does."""
    no_delay = getattr(transport, "setTcpNoDelay", None)
    if no_delay is not None:
        try:
            no_delay(True)
        except OSError:  # pragma: no cover - not a TCP socket after all
            pass


class LayerHandshakeError(error.ConnectError):
    """A transport layer's handshake failed (the message names the layer and reason)."""


@implementer(ITransport, IConsumer, IPushProducer)
class Layer(PassThroughMixin, Protocol):
    """Base class: one layer's handshake below, a plain stream transport above.

    Subclasses override :meth:`handshakeStarted`, :meth:`handshakeData`, :meth:`streamData`,
    :meth:`write`, :meth:`writeSequence` and :meth:`closeLayer` as needed, and call
    :meth:`handshakeDone` or :meth:`handshakeFailed`.
    """

    name = "layer"
    log = Logger(namespace="vtwist.transport")
    handshakeTimeout: float | None = None
    _handshakes: Any = None  # the inbound's HandshakeLimit while this layer's handshake runs

    def __init__(self, factory: IProtocolFactory, ready: Deferred | None = None,
                 clock: IReactorTime | None = None) -> None:
        self.appFactory = factory
        self.ready = ready
        self.clock = clock
        self.app: Any = None
        self.failed = False
        self.disconnecting = False
        self._timer: Any = None
        self._handshakes: Any = None

    @property
    def lowerTransport(self) -> Any:
        """The transport this layer's handshake runs on."""
        return self.transport

    # -- lower side ---------------------------------------------------------------
    def connectionMade(self) -> None:
        """Start the handshake (and its timer). Nagle is off, as in Go: handshakes are small."""
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:  # pragma: no cover - not a TCP socket after all
                pass
        if self.handshakeTimeout is not None:
            clock = resolve_reactor(self.clock)
            # a server layer's handshake (a WebSocket upgrade) counts against the inbound's
            # cap on connections in handshake (vtwist.tunnel.handshakes), if it has one,
            # which then keeps its deadline too (one timer for the inbound's handshakes)
            limit = getattr(self.appFactory, "handshakes", None) if self.ready is None else None
            kept = False
            if limit is not None:
                self._handshakes = limit
                kept = limit.enter(self, self.handshakeTimeout, self._timedOut, clock)
            if not kept:
                self._timer = clock.callLater(self.handshakeTimeout, self._timedOut)
        self.handshakeStarted()

    def dataReceived(self, data: bytes) -> None:
        """Handshake bytes until the layer is up, stream bytes after."""
        if self.app is None:
            if not self.failed:
                self.handshakeData(data)
        else:
            self.streamData(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the application, or report a handshake that never finished."""
        self._cancelTimer()
        if self.app is not None:
            app, self.app = self.app, None
            app.connectionLost(self.lostReason(reason))
            return
        if not self.failed:
            self.failed = True
            why = self.describeFailure(reason)
            self.log.info("{layer} handshake with {peer} failed: {why}",
                          layer=self.name, peer=self._peerText(), why=why)
            self._errback(why)

    # -- hooks ------------------------------------------------------------------------
    def handshakeStarted(self) -> None:
        """The lower connection is up; send the first handshake bytes if any."""

    def handshakeData(self, data: bytes) -> None:
        """Bytes that arrived before the handshake finished."""

    def streamData(self, data: bytes) -> None:
        """Bytes after the handshake: by default they go to the application as they are."""
        self.app.dataReceived(data)

    def closeLayer(self) -> None:
        """The application closes: say goodbye at this layer, then close below."""
        self.transport.loseConnection()

    def lostReason(self, reason: Failure) -> Failure:
        """The reason handed to the application's ``connectionLost``."""
        return reason

    def describeFailure(self, reason: Failure) -> str:
        """One line on why the lower connection went away mid-handshake."""
        if reason.check(error.ConnectionDone):
            return "connection closed by peer"
        return str(reason.value) or reason.type.__name__

    # -- handshake outcome -----------------------------------------------------------
    def handshakeDone(self, leftover: bytes = b"") -> None:
        """Build and connect the application's protocol; deliver ``leftover`` to it."""
        self._cancelTimer()
        if self.failed or self.app is not None:
            return
        if not self.connectApplication():
            return
        if leftover and self.app is not None and not self.disconnecting:
            self.streamData(leftover)

    def connectApplication(self) -> bool:
        """Build and connect the application's protocol and fire ``ready``; False if refused.

        :meth:`handshakeDone` calls it; a layer whose application may write before the
        handshake ends (WebSocket early data) calls it sooner.
        """
        app = self.appFactory.buildProtocol(self.getPeer())
        if app is None:
            self.failed = True
            self._errback("the application refused the connection")
            self.transport.loseConnection()
            return False
        self.app = app
        app.makeConnection(self)
        if self.ready is not None:
            ready, self.ready = self.ready, None
            if not ready.called:
                ready.callback(app)
        return True

    def handshakeFailed(self, why: str, response: bytes = b"", abort: bool = False) -> None:
        """Log one line, send ``response`` (if any), and close the lower connection."""
        if self.failed:
            return
        self.failed = True
        self._cancelTimer()
        self.log.info("{layer} handshake with {peer} failed: {why}",
                      layer=self.name, peer=self._peerText(), why=why)
        self._errback(why)
        if response:
            self.transport.write(response)
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _timedOut(self) -> None:
        self._timer = None
        if self.app is None and not self.failed:
            self.handshakeFailed(f"no handshake within {self.handshakeTimeout:g} s", abort=True)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._handshakes is not None:
            limit, self._handshakes = self._handshakes, None
            limit.leave(self)

    def _errback(self, why: str) -> None:
        if self.ready is not None:
            ready, self.ready = self.ready, None
            if not ready.called:
                ready.errback(LayerHandshakeError(f"{self.name}: {why}"))

    def _peerText(self) -> str:
        try:
            peer = self.transport.getPeer()
        except Exception:  # noqa: BLE001 - a transport without a peer is fine in a log line
            return "?"
        return format_address(peer)

    # -- ITransport for the application ----------------------------------------------
    def write(self, data: bytes) -> None:
        """Send application bytes (subclasses frame or encrypt them)."""
        self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        """Send several application buffers at once."""
        self.transport.writeSequence(data)

    def loseConnection(self) -> None:
        """Close gracefully once what was written has gone out."""
        if self.disconnecting:
            return
        self.disconnecting = True
        self.closeLayer()

    def abortConnection(self) -> None:
        """Drop the connection now."""
        self.disconnecting = True
        self.transport.abortConnection()

    def stopProducing(self) -> None:
        """The consumer is gone: close (gracefully, at this layer too)."""
        self.loseConnection()

    def logPrefix(self) -> str:
        """Log lines name the layer."""
        return self.name


@implementer(IHalfCloseableProtocol)
class HalfCloseLayer(Layer):
    """A layer that passes TCP half-close through (for byte-transparent layers)."""

    def readConnectionLost(self) -> None:
        """The peer finished sending: tell a half-close aware application, else close."""
        if self.app is None:
            self.handshakeFailed("peer closed its side during the handshake")
        elif IHalfCloseableProtocol.providedBy(self.app):
            self.app.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our write side is closed."""
        if self.app is not None and IHalfCloseableProtocol.providedBy(self.app):
            self.app.writeConnectionLost()

    def loseWriteConnection(self) -> None:
        """Half-close: we send no more, the peer may go on (a no-op over TLS or ws)."""
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()


class LayerFactory(Factory):
    """Builds one layer per lower connection around the application's factory."""

    noisy = False

    def __init__(self, build: Callable[[], Layer], wrapped: IProtocolFactory | None = None):
        self.build = build
        self.wrapped = wrapped

    def startFactory(self) -> None:
        """Start the application's factory too."""
        if self.wrapped is not None:
            self.wrapped.doStart()

    def stopFactory(self) -> None:
        """Stop the application's factory too."""
        if self.wrapped is not None:
            self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Layer:
        """A fresh layer protocol."""
        layer = self.build()
        layer.factory = self
        return layer


@implementer(IStreamServerEndpoint)
class LayerServerEndpoint:
    """Listens on ``endpoint`` with ``make(appFactory)`` layers in front of the application."""

    def __init__(self, endpoint: IStreamServerEndpoint,
                 make: Callable[[IProtocolFactory], Layer]) -> None:
        self.endpoint = endpoint
        self.make = make

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Listen; each accepted connection does the layer's handshake first."""
        return self.endpoint.listen(
            LayerFactory(lambda: self.make(protocolFactory), protocolFactory))


@implementer(IStreamClientEndpoint)
class LayerClientEndpoint:
    """Connects through ``endpoint``; fires with the application protocol after the handshake."""

    def __init__(self, endpoint: IStreamClientEndpoint,
                 make: Callable[[IProtocolFactory, Deferred], Layer]) -> None:
        self.endpoint = endpoint
        self.make = make

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Connect below, run the layer handshake, then connect the application."""
        attempt = _LayerConnect(self.make, protocolFactory)
        attempt.lower = self.endpoint.connect(attempt)
        attempt.lower.addErrback(attempt.failed)
        return attempt.ready


class _LayerConnect(Factory):
    """One :meth:`LayerClientEndpoint.connect`: the factory below that builds the (first)
    layer, and ``ready``, which fires with the application protocol once the layer's
    handshake is done (cancelled: the connection, or the connect below, is dropped)."""

    noisy = False

    def __init__(self, make: Callable[[IProtocolFactory, Deferred], Layer],
                 protocolFactory: IProtocolFactory) -> None:
        self.make = make
        self.protocolFactory = protocolFactory
        self.layer: Layer | None = None
        self.lower: Deferred | None = None
        self.ready: Deferred = Deferred(self.cancel)

    def buildProtocol(self, addr: Any) -> Layer:
        """The layer for the connection below."""
        layer = self.make(self.protocolFactory, self.ready)
        if self.layer is None:
            self.layer = layer
        layer.factory = self
        return layer

    def cancel(self, ready: Deferred) -> None:
        """``ready`` was cancelled: abort the connection, or the connect below."""
        layer = self.layer
        if layer is not None and layer.transport is not None:
            layer.transport.abortConnection()
        elif self.lower is not None:
            self.lower.cancel()

    def failed(self, reason: Failure) -> None:
        """The connect below failed."""
        if not self.ready.called:
            self.ready.errback(reason)
