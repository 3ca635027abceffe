"""VMess client: :class:`VMessClientEndpoint`, a public ``IStreamClientEndpoint``.

It wraps any transport endpoint (TCP, TLS, WebSocket, mKCP ...) and tunnels one
connection to ``destination`` through a VMess server. The application's protocol gets a
:class:`~vtwist.proxy.vmess.transport.VMessTransport` as its transport, the way
``TLSMemoryBIOProtocol`` wraps a protocol; producer registration and half-close
(``loseWriteConnection`` -> VMess end-of-stream chunk) pass through.

Fetching a page through a VMess server with ``twisted.web.client.Agent``::

    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint
    from twisted.web.client import Agent, readBody
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer

    from vtwist.address import Destination
    from vtwist.proxy.vmess.client import VMessClientEndpoint
    from vtwist.proxy.vmess.users import Account

    account = Account.from_text("b831381d-6324-4d53-ad4f-8cda48b30811",
                                security="aes-128-gcm")

    @implementer(IAgentEndpointFactory)
    class ThroughVMess:
        def endpointForURI(self, uri):
            server = HostnameEndpoint(reactor, "vmess.example.net", 10086)
            dest = Destination.tcp(uri.host.decode(), uri.port)
            return VMessClientEndpoint(server, account, dest, reactor=reactor)

    agent = Agent.usingEndpointFactory(reactor, ThroughVMess())
    d = agent.request(b"GET", b"http://example.com/")
    d.addCallback(readBody).addCallback(print)

The request header goes out together with the first bytes the application writes (no
extra round trip); if nothing is written within ``header_delay`` seconds it is sent alone.
A close by the server at a chunk boundary is a normal end of the response.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess.body import DEFAULT_SEND_CHUNK, MAX_CHUNK, MAX_SEND_CHUNK, BodyError
from vtwist.proxy.vmess.handshake import ClientSession
from vtwist.proxy.vmess.ids import log_uuid
from vtwist.proxy.vmess.transport import VMessTransport
from vtwist.proxy.vmess.users import Account, resolve_security
from vtwist.reactors import resolve_reactor
from vtwist.sansio import NEED_DATA, Clock

log = Logger(namespace="vtwist.vmess.outbound")

#: How long the 4.34 client waits for the first payload before sending the header alone.
HEADER_DELAY = 0.1

#: Why a server that never answered refused us (a VMess server never says so itself).
NO_ANSWER_HINT = "wrong id, clock skew or not a VMess server?"

# What the one timer of a connection is waiting for: the first payload (then the header
# goes alone), or the server's answer once the application has spoken.
_NO_TIMER = 0
_HEADER_TIMER = 1
_ANSWER_TIMER = 2

#: Why the application's side of a clean end is lost (one instance, as Twisted's own
#: ``connectionDone``).
_STREAM_ENDED = Failure(ConnectionDone("VMess stream ended"))


@implementer(IHalfCloseableProtocol)
class VMessClientProtocol(Protocol):
    """Wraps the application's protocol; owns the VMess session of one connection."""

    app: Any = None
    inner: VMessTransport | None = None

    def __init__(self, factory: _VMessClientFactory) -> None:
        self.factory = factory
        self.session: ClientSession | None = None
        self.decoder: Any = None
        self.eof = False
        self.failed: str | None = None
        #: the header delay, then the answer deadline: one DelayedCall, reset in between
        self._timer: Any = None
        self._timerKind = _NO_TIMER
        self._appLost = False
        #: when the request header went out (reactor seconds)
        self._sentAt: float | None = None
        #: a warning about this connection was logged already (one per failed tunnel)
        self._warned = False
        self._answeredBytes = 0

    def connectionMade(self) -> None:
        """Build the session, hand the plain transport to the application."""
        ep = self.factory.endpoint
        command = ep.command
        session = self.session = ClientSession(ep.account, ep.destination, command,
                                               ep.security_value, address=ep.address)
        self.packet = command == H.CMD_UDP
        self.inner = VMessTransport(self.transport, session.body_encoder(ep.chunk_size),
                                    self._header, self._firstData)
        app = self.app = self.factory.wrapped.buildProtocol(self.transport.getPeer())
        if app is None:
            self.transport.loseConnection()
            return
        self._timer = ep.reactor.callLater(ep.header_delay, self._timerFired)
        self._timerKind = _HEADER_TIMER
        app.makeConnection(self.inner)

    def _stopTimer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            self._timerKind = _NO_TIMER
            if timer.active():
                timer.cancel()

    def _timerFired(self) -> None:
        kind = self._timerKind
        self._timer = None
        self._timerKind = _NO_TIMER
        if kind == _HEADER_TIMER:
            self._headerTimeout()
        elif kind == _ANSWER_TIMER:
            self._noAnswer()

    def _header(self) -> bytes:
        if self._timerKind == _HEADER_TIMER:
            self._stopTimer()
        ep = self.factory.endpoint
        self._sentAt = ep.reactor.seconds()
        return self.session.request_header(ep.clock())

    def _firstData(self) -> None:
        """The application wrote its first bytes: a server answers once the destination
        does, so the answer deadline starts now (a connection where nobody has said
        anything yet, such as a browser's preconnect, is not waiting for an answer).
        The header delay's timer, still waiting when the header goes with these bytes,
        becomes the answer deadline."""
        ep = self.factory.endpoint
        if ep.answer_timeout is not None and self.decoder is None and not self._answeredBytes:
            timer = self._timer
            if timer is not None and timer.active():
                timer.reset(ep.answer_timeout)
            else:
                self._timer = ep.reactor.callLater(ep.answer_timeout, self._timerFired)
            self._timerKind = _ANSWER_TIMER

    # -- failure reasons, one warning per failed connection ------------------------------
    def _where(self) -> str:
        ep = self.factory.endpoint
        peer = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        via = f" via {host}:{port}" if host is not None else ""
        return f"vmess to {ep.destination}{via}"

    def _warn(self, why: str) -> None:
        if self._warned:
            log.info("{where}: {why}", where=self._where(), why=why)
            return
        self._warned = True
        log.warn("{where}: {why}", where=self._where(), why=why)

    def _since(self) -> str:
        if self._sentAt is None:
            return ""
        return f" after {self.factory.endpoint.reactor.seconds() - self._sentAt:.1f} s"

    def _noAnswer(self) -> None:
        """No byte of the response header within the deadline: say what that usually means.

        The connection stays open: a server answers only once the destination does, so a
        slow destination looks the same for a while (an answer later is logged at info).
        """
        if not getattr(self.transport, "peerAnswered", True):
            return  # not even the transport's peer answered: the transport says why
        if self.decoder is None and not self.failed and not self._answeredBytes:
            self._warn(f"server did not answer within {self.factory.endpoint.answer_timeout:g}"
                       f" s: {NO_ANSWER_HINT}")

    def _closedBeforeAnswer(self) -> None:
        """The server closed before its response header was complete: one warning."""
        if self._sentAt is None or self.app is None:
            return
        if self._answeredBytes:
            self._warn(f"server closed the connection{self._since()} in the middle of the "
                       "response header")
        else:
            self._warn(f"server closed the connection{self._since()} without answering: "
                       f"{NO_ANSWER_HINT}")

    def _cancelAnswerTimer(self) -> None:
        if self._timerKind == _ANSWER_TIMER:
            self._stopTimer()

    def _headerTimeout(self) -> None:
        if self.inner is not None and not self.inner.disconnecting:
            self.inner.flushHeader()

    def dataReceived(self, data: bytes) -> None:
        """Response header first, then body chunks to the application."""
        if self.failed or self.eof:
            return
        if self.decoder is None:
            self._answeredBytes += len(data)
            try:
                got = self.session.feed_response(data)
            except H.HeaderError as e:
                self._cancelAnswerTimer()
                self._fail(f"the response failed authentication ({e.reason}): the server "
                           "does not hold this id's keys (a different server or a "
                           "man in the middle?)", warn=True)
                return
            if got is NEED_DATA:
                return
            self._cancelAnswerTimer()
            response, self.decoder, data = got
            if self._warned:
                log.info("{where}: the server answered{since} (a slow destination, not a "
                         "refusal)", where=self._where(), since=self._since())
            if response.command:
                self._logCommand(response)
            if not data:
                return
        try:
            payloads = self.decoder.feed(data)
        except BodyError as e:
            self._fail(str(e))
            return
        app = self.app
        if payloads:
            if self.packet:
                for p in payloads:
                    app.dataReceived(bytes(p))
            elif len(payloads) == 1:
                app.dataReceived(bytes(payloads[0]))
            else:
                app.dataReceived(b"".join(payloads))
        if self.decoder.eof:
            self._endOfStream()

    def _logCommand(self, response: H.ResponseHeader) -> None:
        cmd = H.parse_command(response.command, response.command_data)
        if cmd is None:
            log.info("vmess: ignoring response command {id}", id=response.command)
            return
        onCommand = self.factory.endpoint.onCommand
        log.info("vmess: server offers SwitchAccount to {host}:{port} id {id} alterId "
                 "{alter} level {ulevel} for {mins} min ({use})",
                 host=cmd.host or "(same server)", port=cmd.port, id=log_uuid(cmd.uuid),
                 alter=cmd.alter_ids, ulevel=cmd.level, mins=cmd.valid_minutes,
                 use="taken in turn" if onCommand is not None else "not used")
        if onCommand is not None:
            onCommand(cmd)

    def _endOfStream(self) -> None:
        if self.eof:
            return
        self.eof = True
        if IHalfCloseableProtocol.providedBy(self.app):
            self.app.readConnectionLost()
        else:
            self.inner.loseConnection()

    def _fail(self, why: str, warn: bool = False) -> None:
        self.failed = why
        if warn:
            self._warn(why)
        else:
            log.info("{where}: {why}", where=self._where(), why=why)
        self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        """The server half-closed TCP: a normal end if it happened at a chunk boundary."""
        if self.failed or self.app is None:
            return
        if self.decoder is not None and self.decoder.at_boundary:
            self._endOfStream()
        elif not self.eof:
            if self.decoder is None:
                self._cancelAnswerTimer()
                self._closedBeforeAnswer()
            self.failed = "connection closed in the middle of a chunk" if self.decoder \
                else "connection closed before the response header"
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our TCP write side closed; nothing to tell the application."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Tell the application; a close at a chunk boundary is a clean end."""
        if self._timer is not None:
            self._stopTimer()
        if self.decoder is None and self.failed is None \
                and not (self.inner is not None and self.inner.disconnecting) \
                and not (reason is not None and reason.check(TimeoutError,
                                                             ConnectionRefusedError)):
            self._closedBeforeAnswer()  # (the transport said why a refusal or timeout was)
        if self.app is None or self._appLost:
            return
        self._appLost = True
        clean = (self.failed is None and self.decoder is not None
                 and (self.eof or self.decoder.at_boundary))
        if clean:
            reason = _STREAM_ENDED
        elif self.failed is not None:
            reason = Failure(ConnectionLost(self.failed))
        elif reason is None or reason.check(ConnectionDone):
            reason = Failure(ConnectionLost(
                "VMess connection closed before the response header" if self.decoder is None
                else "VMess connection closed in the middle of a chunk"))
        self.app.connectionLost(reason)


class _VMessClientFactory(Factory):
    noisy = False  # one per connection: no 'Starting factory' event each time

    def __init__(self, endpoint: VMessClientEndpoint, wrapped: Any) -> None:
        self.endpoint = endpoint
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> VMessClientProtocol:
        return VMessClientProtocol(self)


def _unwrap(p: VMessClientProtocol) -> Any:
    """The application's protocol of a connected VMess client protocol."""
    if p.app is None:
        raise ConnectionLost("the protocol factory refused the connection")
    return p.app


@implementer(IStreamClientEndpoint)
class VMessClientEndpoint:
    """Connect through a VMess server to ``destination``.

    ``transport_endpoint`` reaches the VMess server; ``account`` carries the UUID, alterId
    (0 means the AEAD header, as in 4.34) and ``security``; the ``security`` argument
    overrides it. ``command`` is ``CMD_TCP`` (default) or ``CMD_UDP``. ``clock`` gives the
    wall-clock seconds stamped into the request header (``time.time`` by default).
    ``answer_timeout`` (seconds, e.g. the policy's ``handshake``): when no byte of the
    response arrives that long after the application's first bytes went out, one warning
    says what that usually means
    (wrong id, clock skew, not a VMess server); the connection stays open, since a server
    answers only once the destination does. A close before the answer, a response failing
    authentication and a refused connect are warnings too (one per connection).
    ``onCommand(SwitchAccount)`` hears a server's dynamic-port offer. ``chunk_size`` is
    the largest request chunk sent (16 KiB by default; 2048 is V2Ray's own writer, for a
    server whose reader needs it); UDP always keeps V2Ray's 2048.
    The Deferred fires with the application's protocol once the transport is connected.
    """

    def __init__(self, transport_endpoint: Any, account: Account, destination: Destination,
                 security: str | int | None = None, *, reactor: Any = None,
                 command: int = H.CMD_TCP, header_delay: float = HEADER_DELAY,
                 clock: Clock = time.time,
                 onCommand: Callable[[H.SwitchAccount], None] | None = None,
                 chunk_size: int = DEFAULT_SEND_CHUNK,
                 answer_timeout: float | None = None) -> None:
        if not MAX_CHUNK <= chunk_size <= MAX_SEND_CHUNK:
            raise ValueError(f"chunk_size {chunk_size} outside {MAX_CHUNK}..{MAX_SEND_CHUNK}")
        self.transport_endpoint = transport_endpoint
        self.chunk_size = chunk_size
        self.account = account
        self.destination = destination
        self.command = command
        self.reactor = resolve_reactor(reactor)
        self.header_delay = header_delay
        self.clock = clock
        self.onCommand = onCommand
        self.answer_timeout = answer_timeout
        #: the destination as the request header carries it (set by :meth:`connect`)
        self.address: bytes | None = None
        if isinstance(security, int):
            self.security_value = security
        else:
            self.security_value = resolve_security(security or account.security)

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Connect the lower endpoint, then start the wrapped protocol at once.

        A destination VMess cannot carry (a non-ASCII or over-long domain) fails the
        Deferred at once, before any connection is made.
        """
        if self.command != H.CMD_MUX:
            try:
                self.address = H.encode_address(self.destination)
            except ValueError as e:  # UnicodeEncodeError is a ValueError
                return fail(ConnectError(f"VMess cannot carry {self.destination}: {e}"))
        d = self.transport_endpoint.connect(_VMessClientFactory(self, protocolFactory))
        return d.addCallbacks(_unwrap, self._connectFailed)

    def _connectFailed(self, failure: Failure) -> Failure:
        """A server that cannot be reached: one warning naming it (then the errback goes on)."""
        if not failure.check(CancelledError, ConnectingCancelledError):
            log.warn("vmess to {dest}: cannot reach the server: {why}", dest=self.destination,
                     why=failure.getErrorMessage())
        return failure
