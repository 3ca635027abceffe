"""The HTTP proxy inbound's Protocol and Factory: CONNECT tunnels and plain forward requests.

:class:`HttpProxyProtocol` parses the client's requests with
:class:`~vtwist.proxy.http.codec.ServerCodec` (h11) under the policy's handshake timeout
(which is also the idle time allowed between keep-alive requests, as in V2Ray).

- ``CONNECT host:port`` hands the transport, the destination and the bytes after the head to
  :meth:`TunnelService.openStream`; :class:`ConnectReply` answers ``200 Connection
  established`` once the outbound is connected, or ``502``/``504`` and a close.
- A plain request (``GET http://host/path``) becomes one :class:`Exchange`: it is routed and
  connected on its own through :meth:`TunnelService.connect`, the request goes upstream
  rewritten (origin form, no hop-by-hop or ``Proxy-*`` headers) with its body streamed, and
  the response comes back through :class:`~vtwist.proxy.http.codec.UpstreamCodec`, which
  knows where it ends; then the client connection carries the next request when both sides
  allow it. Each side is the streaming producer of the other while bytes flow, so a slow
  reader pauses the writer.

Bad input gets a status (400, 407, 408, 431, 502, 504) when one can still be sent, one access
line (``rejected http: ...``) or log line, and a close.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import format_address
from vtwist.interfaces import IInboundReply
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.credentials import password_ok
from vtwist.proxy.http.codec import (
    AUTH_REQUIRED,
    CONNECT_ESTABLISHED,
    Body,
    BodyEnd,
    ClientClosed,
    HttpError,
    ProxyRequest,
    ResponseEnd,
    ResponseHead,
    ServerCodec,
    UpstreamCodec,
    error_response,
)
from vtwist.sansio import Event
from vtwist.transport.internals import raise_write_high_water
from vtwist.transport.layer import set_no_delay
from vtwist.tunnel.activity import ActivityTimer
from vtwist.tunnel.failures import ConnectFailure, classify
from vtwist.tunnel.handshakes import handshakes_of, start_handshake
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.relay import RelayProtocol
from vtwist.tunnel.service import TunnelService
from vtwist.tunnel.stream import StreamTunnel

log = Logger(namespace="vtwist.http")


def status_for(kind: ConnectFailure) -> int:
    """The status that tells the client why the outbound failed: 504 for a timeout, else 502."""
    return 504 if kind is ConnectFailure.TIMED_OUT else 502


class Phase(Enum):
    """Where one client connection is."""

    HEAD = "head"  # waiting for (the rest of) a request head
    EXCHANGE = "exchange"  # a plain request in flight
    TUNNEL = "tunnel"  # CONNECT: the tunnel service relays
    CLOSED = "closed"


@implementer(IHalfCloseableProtocol)
class HttpProxyProtocol(Protocol):
    """One client connection of the http inbound."""

    def __init__(self, factory: HttpProxyFactory) -> None:
        self.factory = factory
        self.codec = ServerCodec(factory.allow_transparent)
        self.phase = Phase.HEAD
        self.source = "unknown"
        self.tunnel: StreamTunnel | None = None
        self.exchange: Exchange | None = None
        self.clientDone = False  # the client half-closed
        self._timer: IDelayedCall | None = None
        self._began = 0.0

    # -- connection events -------------------------------------------------------------
    def connectionMade(self) -> None:
        """Start the handshake clock."""
        self.source = format_address(self.transport.getPeer())
        set_no_delay(self.transport)
        #: when the connection came (the first request's handshake latency; 0: measured)
        self._began = self.factory.reactor.seconds()
        self._startTimer()

    def dataReceived(self, data: bytes) -> None:
        """Request bytes, or the tunnel's payload after a CONNECT."""
        phase = self.phase
        if phase is Phase.TUNNEL:
            self.tunnel.received(data)  # type: ignore[union-attr]
        elif phase is not Phase.CLOSED:
            self._feed(data)

    def readConnectionLost(self) -> None:
        """The client half-closed its side."""
        if self.phase is Phase.TUNNEL:
            self.tunnel.eof()  # type: ignore[union-attr]
        elif self.phase is not Phase.CLOSED:
            self._feed(b"")

    def writeConnectionLost(self) -> None:
        """Our write side is closed; nothing to do."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Free everything this connection holds."""
        phase, self.phase = self.phase, Phase.CLOSED
        self._cancelTimer()
        if phase is Phase.TUNNEL and self.tunnel is not None:
            self.tunnel.lost(reason)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.abort()

    # -- requests ----------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except HttpError as e:
            self._refuse(e.status, e.why)
            return
        self._handle(events)

    def _handle(self, events: list[Event]) -> None:
        current = self.exchange
        for event in events:
            if self.phase is Phase.CLOSED or self.phase is Phase.TUNNEL:
                return
            if isinstance(event, ProxyRequest):
                if self.phase is not Phase.HEAD:
                    return
                self._request(event)
                current = self.exchange
            elif isinstance(event, (Body, BodyEnd)):
                if current is None or current is not self.exchange:
                    return
                if isinstance(event, Body):
                    current.body(event.data)
                else:
                    current.bodyEnd()
            elif isinstance(event, ClientClosed):
                self._clientClosed()

    def _clientClosed(self) -> None:
        self.clientDone = True
        if self.phase is Phase.EXCHANGE and self.exchange is not None:
            self.exchange.clientEOF()
        elif self.phase is Phase.HEAD:
            if self.codec.requests == 0:
                self._reject("connection closed before a request")
            else:
                self._close()

    def _request(self, request: ProxyRequest) -> None:
        self._cancelTimer()
        factory = self.factory
        email = None
        if factory.accounts:
            credentials = request.credentials
            if credentials is None or not password_ok(factory.accounts.get(credentials[0]),
                                                      credentials[1]):
                self.transport.write(AUTH_REQUIRED)
                self._reject("proxy authentication required" if credentials is None else
                             f"invalid user or password for {credentials[0]!r}")
                return
            email = credentials[0]
        if self._began:  # the first request: connection to request head, as the metric
            stats = getattr(factory.tunnels, "stats", None)
            if stats is not None:
                stats.handshake("http", factory.reactor.seconds() - self._began)
            self._began = 0.0
        if request.connect:
            self.phase = Phase.TUNNEL
            early = self.codec.take_trailing_data()
            self.tunnel = factory.tunnels.openStream(
                self.transport, request.destination, ConnectReply(self),
                early=[early] if early else None, inbound_tag=factory.tag,
                source=self.source, email=email, policy=factory.policy)
            return
        self.phase = Phase.EXCHANGE
        self.exchange = Exchange(self, request, email)
        self.exchange.start()

    def exchangeDone(self, exchange: Exchange) -> None:
        """``exchange``'s response is complete: next request, or close."""
        if exchange is not self.exchange:
            return
        self.exchange = None
        if self.phase is not Phase.EXCHANGE:
            return
        if self.clientDone or not self.codec.next_cycle():
            self._close()
            return
        self.phase = Phase.HEAD
        self._startTimer()
        self.transport.resumeProducing()
        try:
            events = self.codec.events()  # a pipelined request already here
        except HttpError as e:
            self._refuse(e.status, e.why)
            return
        self._handle(events)

    # -- refusals and closing ----------------------------------------------------------
    def _refuse(self, status: int, why: str) -> None:
        """Answer ``status`` if no response has started, one access line, close."""
        if self.codec.can_send_error():
            self.transport.write(error_response(status))
        self._reject(why)

    def _reject(self, why: str) -> None:
        self.factory.tunnels.reject(self.source, "http", why)
        self._close()

    def _close(self) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self._cancelTimer()
            exchange, self.exchange = self.exchange, None
            if exchange is not None:
                exchange.abort()
            self.transport.loseConnection()

    def _startTimer(self) -> None:
        self._cancelTimer()
        # waiting for a request head (the first, or the next on a kept-alive connection)
        self._timer = start_handshake(self.factory, self, self.factory.policy.handshake,
                                      self._handshakeTimeout)

    def _handshakeTimeout(self) -> None:
        self._timer = None
        if self.phase is not Phase.HEAD:
            return
        after = f"{self.factory.policy.handshake:g}s"
        if self.codec.mid_request:
            self._refuse(408, f"request head not complete after {after}")
        elif self.codec.requests == 0:
            self._reject(f"no request within {after}")
        else:
            log.debug("http: {source} idle after a request, closing", source=self.source)
            self._close()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        limit = handshakes_of(self.factory)
        if limit is not None:
            limit.leave(self)


@implementer(IInboundReply)
class ConnectReply:
    """The answer to a CONNECT once the tunnel knows whether the outbound connected."""

    wantsBound = False  # succeeded() ignores the outbound's address

    def __init__(self, protocol: HttpProxyProtocol) -> None:
        self.protocol = protocol

    def succeeded(self, bound: Any) -> None:
        """``200 Connection established``; the relay follows."""
        self.protocol.transport.write(CONNECT_ESTABLISHED)

    def failed(self, kind: ConnectFailure, reason: Failure) -> None:
        """502 (refused, unreachable, other) or 504 (timed out), then close."""
        protocol = self.protocol
        protocol.transport.write(error_response(status_for(kind)))
        protocol._close()


class Exchange:
    """One plain forward-proxy request: its own route, connection and response.

    The outbound connection's :class:`RelayProtocol` reports to this object as it would to a
    relay (``received``, ``eof``, ``lost``).
    """

    def __init__(self, protocol: HttpProxyProtocol, request: ProxyRequest,
                 email: str | None) -> None:
        self.protocol = protocol
        self.request = request
        self.email = email
        self.upstream = UpstreamCodec(request)
        self.pending: list[bytes] = [self.upstream.start()]
        self.outbound: Any = None  # the outbound connection's transport
        self.bodyDone = False
        self.finished = False
        self.activity: ActivityTimer | None = None
        self._connecting: Deferred[RelayProtocol] | None = None
        #: the counters and close line of this request's connection (once connected)
        self.meter: Any = None

    def start(self) -> None:
        """Pause the client, route and connect within the policy's deadline."""
        protocol = self.protocol
        factory = protocol.factory
        protocol.transport.pauseProducing()
        d = factory.tunnels.connect(self.request.destination, inbound_tag=factory.tag,
                                    source=protocol.source, email=self.email,
                                    timeout=factory.policy.connect_timeout)
        if not d.called:
            self._connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    # -- the request body from the client ------------------------------------------------
    def body(self, data: bytes | bytearray) -> None:
        """Request body bytes: framed and sent (or kept until connected)."""
        self._toOrigin(self.upstream.send_body(data))

    def bodyEnd(self) -> None:
        """The request is complete: stop reading the client until the response is done."""
        self.bodyDone = True
        self._toOrigin(self.upstream.end_body())
        client = self.protocol.transport
        client.pauseProducing()
        if self.outbound is not None:
            self.outbound.unregisterProducer()

    def clientEOF(self) -> None:
        """The client half-closed: fine after a whole request, fatal in the middle of one."""
        if not self.bodyDone:
            log.info("http: {source} closed in the middle of its request to {dest}",
                     source=self.protocol.source, dest=self.request.destination)
            self.protocol._close()

    def _toOrigin(self, data: bytes) -> None:
        if not data:
            return
        if self.outbound is None:
            self.pending.append(data)
        else:
            self.activity.active = True  # type: ignore[union-attr]
            self.meter.counts[0] += len(data)
            self.outbound.write(data)

    # -- the outbound connection ---------------------------------------------------------
    def _connected(self, relayProtocol: RelayProtocol) -> None:
        self._connecting = None
        outbound = relayProtocol.transport
        if self.finished:
            outbound.loseConnection()
            return
        protocol = self.protocol
        factory = protocol.factory
        self.outbound = outbound
        set_no_delay(outbound)
        raise_write_high_water(outbound)
        client = protocol.transport
        client.registerProducer(outbound, True)  # a slow client pauses the origin
        if not self.bodyDone:
            outbound.registerProducer(client, True)  # a slow origin pauses the client
        pending, self.pending = self.pending, []
        self.meter = factory.tunnels.meter(
            self.request.destination, getattr(relayProtocol, "outbound_tag", ""),
            inbound_tag=factory.tag, source=protocol.source, email=self.email,
            policy=factory.policy)
        self.meter.counts[0] += sum(len(p) for p in pending)
        outbound.writeSequence(pending)
        self.activity = ActivityTimer(factory.reactor, factory.policy.conn_idle, self._idle)
        relayProtocol.attach(self)  # type: ignore[arg-type]
        if not self.bodyDone and not self.finished:
            client.resumeProducing()

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if self.finished:
            return
        kind = classify(failure)
        log.info("{source} to {dest} failed ({kind}): {why}", source=self.protocol.source,
                 dest=self.request.destination, kind=kind.value, why=failure.getErrorMessage())
        self._answerError(status_for(kind))

    # -- the response (the RelayProtocol's side of a relay) ------------------------------
    def received(self, side: int, data: Any) -> None:
        """Bytes from the origin."""
        if self.finished:
            return
        self.activity.active = True  # type: ignore[union-attr]
        self.meter.counts[1] += len(data)
        try:
            events = self.upstream.receive_data(data)
        except HttpError as e:
            self._badResponse(e.why)
            return
        self._deliver(events)

    def receivedSequence(self, side: int, chunks: list[Any]) -> None:
        """Several pieces from the origin at once."""
        for chunk in chunks:
            self.received(side, chunk)

    def eof(self, side: int) -> None:
        """The origin half-closed: the end of a close-delimited response, or a cut."""
        self.received(side, b"")

    def lost(self, side: int, reason: Failure | None = None) -> None:
        """The origin connection is gone."""
        if not self.finished:
            self.received(side, b"")
        if not self.finished:
            self._badResponse("the origin connection was lost")

    def _deliver(self, events: list[Event]) -> None:
        codec = self.protocol.codec
        out: list[bytes] = []
        try:
            for event in events:
                if isinstance(event, ResponseHead):
                    out.append(codec.send_head(event))
                elif isinstance(event, Body):
                    out.append(codec.send_body(event.data))
                elif isinstance(event, ResponseEnd):
                    out.append(codec.end_response())
                    self.protocol.transport.writeSequence(out)
                    self._finish()
                    return
        except h11.LocalProtocolError as e:
            self._badResponse(f"cannot relay the response: {e}")
            return
        if out:
            self.protocol.transport.writeSequence(out)

    def _badResponse(self, why: str) -> None:
        log.info("http: {source} to {dest}: {why}", source=self.protocol.source,
                 dest=self.request.destination, why=why)
        self._answerError(502)

    def _answerError(self, status: int) -> None:
        protocol = self.protocol
        if protocol.phase is not Phase.CLOSED and protocol.codec.can_send_error():
            protocol.transport.write(error_response(status))
        protocol._close()

    # -- ending ----------------------------------------------------------------------------
    def _finish(self) -> None:
        self._release()
        self.protocol.exchangeDone(self)

    def _release(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.activity is not None:
            self.activity.cancel()
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()
        outbound = self.outbound
        if self.meter is not None:
            self.meter.close()
        if outbound is not None:
            try:
                self.protocol.transport.unregisterProducer()
            except Exception:  # noqa: BLE001 - a transport already gone may refuse
                pass
            if not self.bodyDone:
                try:
                    outbound.unregisterProducer()
                except Exception:  # noqa: BLE001
                    pass
            outbound.loseConnection()

    def abort(self) -> None:
        """The client connection is closing: drop the origin connection."""
        self._release()

    def _idle(self) -> None:
        log.info("http: {source} to {dest}: idle for {t:g}s, closing",
                 source=self.protocol.source, dest=self.request.destination,
                 t=self.protocol.factory.policy.conn_idle)
        self.protocol._close()


class HttpProxyFactory(InboundFactory):
    """Builds :class:`HttpProxyProtocol` for one http inbound.

    ``accounts`` maps user to password; empty means no authentication.
    """

    protocol = HttpProxyProtocol  # type: ignore[assignment]

    def __init__(self, tunnels: TunnelService, *, tag: str = "",
                 accounts: dict[str, str] | None = None, allow_transparent: bool = False,
                 policy: LevelPolicy = DEFAULT_LEVEL) -> None:
        super().__init__(tunnels, tag)
        self.accounts = accounts or {}
        self.allow_transparent = allow_transparent
        self.policy = policy
