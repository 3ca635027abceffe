"""The SOCKS inbound's Protocol and Factory: handshake, connect, then relay.

:class:`SocksServerProtocol` drives a :class:`~vtwist.proxy.socks.codec.ServerCodec` under the
policy's handshake timeout. For CONNECT it pauses its transport (keeping any early bytes), asks
the dispatcher to connect, answers with the reply code that matches the outcome, then joins the
two transports in a :class:`~vtwist.relay.Relay` as side 0. For UDP ASSOCIATE it opens a
:class:`~vtwist.proxy.socks.udp.UDPAssociation` that lives as long as the TCP connection.
Every refused or broken handshake is one access line (``from ... rejected ...``) and a close.
"""

from __future__ import annotations

import errno
from enum import Enum
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, format_address, normalize_host, parse_ip
from vtwist.dispatch import access_log
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.socks.codec import (
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    METHOD_NO_ACCEPTABLE,
    METHOD_NO_AUTH,
    METHOD_PASSWORD,
    SOCKS4,
    AuthResult,
    Credentials,
    Greeting,
    MethodChoice,
    ProtocolError,
    Reply,
    ReplyCode,
    Request,
    ServerCodec,
)
from vtwist.proxy.socks.udp import UDP_IDLE_TIMEOUT, UDPAssociation
from vtwist.relay import INBOUND, Relay
from vtwist.transport.layer import set_no_delay

log = Logger(namespace="vtwist.socks")

#: Seconds to wait for the outbound to connect (V2Ray's system dialer uses 16 s).
CONNECT_TIMEOUT = 16.0

_ERRNO_REPLIES = {
    errno.ECONNREFUSED: ReplyCode.CONNECTION_REFUSED,
    errno.ENETUNREACH: ReplyCode.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: ReplyCode.HOST_UNREACHABLE,
    errno.ETIMEDOUT: ReplyCode.TTL_EXPIRED,
}


def reply_for_failure(failure: Failure) -> ReplyCode:
    """The SOCKS5 reply code that describes why an outbound connection failed."""
    e = failure.value
    if isinstance(e, error.ConnectionRefusedError):
        return ReplyCode.CONNECTION_REFUSED
    if isinstance(e, (error.TimeoutError, error.TCPTimedOutError, defer.TimeoutError,
                      defer.CancelledError, error.ConnectingCancelledError)):
        return ReplyCode.TTL_EXPIRED
    if isinstance(e, (error.DNSLookupError, error.UnknownHostError)):
        return ReplyCode.HOST_UNREACHABLE
    number = getattr(e, "osError", None) if isinstance(e, error.ConnectError) else \
        getattr(e, "errno", None)
    if number in _ERRNO_REPLIES:
        return _ERRNO_REPLIES[number]
    if isinstance(e, error.NoRouteError):
        return ReplyCode.HOST_UNREACHABLE
    return ReplyCode.GENERAL_FAILURE


class Phase(Enum):
    """Lifecycle of one SOCKS connection."""

    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    RELAY = "relay"
    UDP = "udp"
    CLOSED = "closed"


@implementer(IHalfCloseableProtocol)
class SocksServerProtocol(Protocol):
    """One client connection of the SOCKS inbound."""

    def __init__(self, factory: SocksServerFactory) -> None:
        self.factory = factory
        self.codec = ServerCodec()
        self.phase = Phase.HANDSHAKE
        self.source = "unknown"
        self.email: str | None = None
        self.relay: Relay | None = None
        self.association: UDPAssociation | None = None
        self._timer: IDelayedCall | None = None
        self._connecting: defer.Deferred[Any] | None = None
        self._early: list[bytes] = []
        self._early_eof = False
        self._timed_out = False

    # -- connection events -------------------------------------------------------------
    def connectionMade(self) -> None:
        """Start the handshake clock."""
        self.source = format_address(self.transport.getPeer())
        set_no_delay(self.transport)
        self._timer = self.factory.reactor.callLater(
            self.factory.policy.handshake, self._handshakeTimeout)

    def dataReceived(self, data: bytes) -> None:
        """Handshake bytes, early payload, or relayed payload, depending on the phase."""
        phase = self.phase
        if phase is Phase.RELAY:
            self.relay.received(INBOUND, data)  # type: ignore[union-attr]
        elif phase is Phase.HANDSHAKE:
            self._handshake(data)
        elif phase is Phase.CONNECTING:
            self._early.append(data)
        # UDP: the control connection carries nothing; CLOSED: ignore.

    def readConnectionLost(self) -> None:
        """The client half-closed its side."""
        phase = self.phase
        if phase is Phase.RELAY:
            self.relay.eof(INBOUND)  # type: ignore[union-attr]
        elif phase is Phase.CONNECTING:
            self._early_eof = True
        elif phase is Phase.HANDSHAKE:
            self._reject("connection closed during the handshake")
        elif phase is Phase.UDP:
            self._close()

    def writeConnectionLost(self) -> None:
        """Our write side is closed; the relay handles the rest."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Free everything this connection holds."""
        phase, self.phase = self.phase, Phase.CLOSED
        self._cancelTimer()
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()
        if self.association is not None:
            self.association.close()
        if phase is Phase.RELAY and self.relay is not None:
            self.relay.lost(INBOUND, reason)
        self._early.clear()

    # -- handshake ---------------------------------------------------------------------
    def _handshake(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except ProtocolError as e:
            if e.reply:
                self.transport.write(e.reply)
            self._reject(str(e))
            return
        for event in events:
            if self.phase is not Phase.HANDSHAKE:
                return
            if isinstance(event, Greeting):
                self._greeting(event)
            elif isinstance(event, Credentials):
                self._credentials(event)
            elif isinstance(event, Request):
                self._request(event)

    def _greeting(self, greeting: Greeting) -> None:
        wanted = METHOD_PASSWORD if self.factory.accounts is not None else METHOD_NO_AUTH
        if wanted not in greeting.methods:
            self.transport.write(self.codec.send(MethodChoice(METHOD_NO_ACCEPTABLE)))
            self._reject("no matching authentication method")
            return
        self.transport.write(self.codec.send(MethodChoice(wanted)))
        # The client may have pipelined the next message.
        self._handshake(b"")

    def _credentials(self, credentials: Credentials) -> None:
        accounts = self.factory.accounts or {}
        expected = accounts.get(credentials.username)
        ok = expected is not None and expected == credentials.password
        self.transport.write(self.codec.send(AuthResult(ok)))
        if not ok:
            self._reject("invalid username or password")
            return
        self.email = credentials.username.decode("utf-8", "replace")
        self._handshake(b"")

    def _request(self, request: Request) -> None:
        if request.version == SOCKS4:
            if self.factory.accounts is not None:
                self._refuse(ReplyCode.NOT_ALLOWED, "SOCKS4 is not allowed when auth is required")
                return
            if request.command != CMD_CONNECT:
                self._refuse(ReplyCode.COMMAND_NOT_SUPPORTED,
                             f"unsupported SOCKS4 command {request.command}")
                return
        if request.command == CMD_CONNECT:
            self._connect(request.destination)
        elif request.command == CMD_UDP_ASSOCIATE and self.factory.udp:
            self._associate(request)
        else:
            what = "UDP is not enabled" if request.command == CMD_UDP_ASSOCIATE else \
                f"unsupported command {request.command}"
            self._refuse(ReplyCode.COMMAND_NOT_SUPPORTED, what)

    def _refuse(self, code: ReplyCode, why: str) -> None:
        self.transport.write(self.codec.send(Reply(code)))
        self._reject(why)

    def _reject(self, why: str) -> None:
        """One access line, then close."""
        access_log.info("{line}", line=f"from {self.source} rejected socks: {why}")
        self._close()

    def _handshakeTimeout(self) -> None:
        self._timer = None
        if self.phase is Phase.HANDSHAKE:
            self._reject(f"handshake timed out after {self.factory.policy.handshake:g}s")

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self._cancelTimer()
            if self.association is not None:
                self.association.close()
            self.transport.loseConnection()

    # -- CONNECT -----------------------------------------------------------------------
    def _connect(self, destination: Destination) -> None:
        self._cancelTimer()
        self.phase = Phase.CONNECTING
        self.transport.pauseProducing()
        early = self.codec.take_trailing_data()
        if early:
            self._early.append(early)
        factory = self.factory
        try:
            d = factory.dispatcher.connect(destination, inbound_tag=factory.tag,
                                           source=self.source, email=self.email)
        except Exception:  # noqa: BLE001 - becomes a failure reply
            d = defer.fail()
        self._connecting = d
        if not d.called:
            self._timer = factory.reactor.callLater(factory.connect_timeout,
                                                    self._connectTimeout)
        d.addCallbacks(self._connected, self._connectFailed, callbackArgs=(destination,),
                       errbackArgs=(destination,))

    def _connectTimeout(self) -> None:
        self._timer = None
        if self._connecting is not None:
            self._timed_out = True
            self._connecting.cancel()

    def _connected(self, outbound: Any, destination: Destination) -> None:
        self._connecting = None
        self._cancelTimer()
        if self.phase is not Phase.CONNECTING:  # the client left meanwhile
            outbound.transport.loseConnection()
            return
        set_no_delay(outbound.transport)  # relayed small writes must not wait
        bound = outbound.transport.getHost()
        host = getattr(bound, "host", None)
        host = normalize_host(host) if host and parse_ip(host) is not None else "0.0.0.0"
        port = getattr(bound, "port", 0) or 0
        self.transport.write(self.codec.send(Reply(ReplyCode.SUCCEEDED, host, port)))
        self.phase = Phase.RELAY
        relay = Relay(self.transport, outbound.transport, self.factory.reactor,
                      self.factory.policy)
        self.relay = relay
        outbound.attach(relay)
        if relay.finished:
            return
        # Resume before replaying: a big early write may pause us again, and that must stick.
        self.transport.resumeProducing()
        early, self._early = self._early, []
        if early:
            relay.receivedSequence(INBOUND, early)
        if self._early_eof:
            relay.eof(INBOUND)

    def _connectFailed(self, failure: Failure, destination: Destination) -> None:
        self._connecting = None
        self._cancelTimer()
        if self.phase is not Phase.CONNECTING:
            return
        code = ReplyCode.TTL_EXPIRED if self._timed_out else reply_for_failure(failure)
        why = "timed out" if self._timed_out else failure.getErrorMessage()
        log.info("socks: {source} to {dest} failed ({code}): {why}", source=self.source,
                 dest=destination, code=code.name.lower().replace("_", " "), why=why)
        self.transport.write(self.codec.send(Reply(code)))
        self._close()

    # -- UDP ASSOCIATE -----------------------------------------------------------------
    def _associate(self, request: Request) -> None:
        self._cancelTimer()
        factory = self.factory
        peer = self.transport.getPeer()
        association = UDPAssociation(
            factory.reactor, factory.dispatcher, getattr(peer, "host", ""),
            inbound_tag=factory.tag, source=self.source, email=self.email,
            idle_timeout=factory.udp_idle_timeout)
        try:
            port = association.listen(factory.udp_interface())
        except Exception as e:  # noqa: BLE001 - CannotListenError and friends
            log.info("socks: {source}: cannot open a UDP socket: {e}", source=self.source, e=e)
            self.transport.write(self.codec.send(Reply(ReplyCode.GENERAL_FAILURE)))
            self._close()
            return
        self.association = association
        self.phase = Phase.UDP
        host = factory.udp_address or factory.udp_reply_host(self.transport.getHost())
        self.transport.write(self.codec.send(Reply(ReplyCode.SUCCEEDED, host, port)))
        log.debug("socks: {source} UDP associate on port {port}", source=self.source, port=port)


class SocksServerFactory(Factory):
    """Builds :class:`SocksServerProtocol` for one socks inbound.

    ``accounts`` maps user name to password (bytes); ``None`` means no authentication.
    ``udp`` enables UDP ASSOCIATE; the association's socket binds on ``listen`` and the reply
    names ``udp_address`` if given (V2Ray's ``settings.ip``), else the address the client
    reached us on.
    """

    protocol = SocksServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, reactor: Any, dispatcher: Any, *, tag: str = "",
                 accounts: dict[bytes, bytes] | None = None, udp: bool = False,
                 udp_address: str | None = None, listen: str = "0.0.0.0",
                 policy: LevelPolicy = DEFAULT_LEVEL, connect_timeout: float = CONNECT_TIMEOUT,
                 udp_idle_timeout: float = UDP_IDLE_TIMEOUT) -> None:
        self.reactor = reactor
        self.dispatcher = dispatcher
        self.tag = tag
        self.accounts = accounts
        self.udp = udp
        self.udp_address = udp_address
        self.listen = listen
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.udp_idle_timeout = udp_idle_timeout

    def buildProtocol(self, addr: Any) -> SocksServerProtocol:
        """A protocol for one client."""
        return SocksServerProtocol(self)

    def udp_interface(self) -> str:
        """Where association sockets bind: the inbound's listen address."""
        return self.listen or "0.0.0.0"

    def udp_reply_host(self, local: Any) -> str:
        """The address to name in a UDP ASSOCIATE reply when ``ip`` is not configured."""
        listen = parse_ip(self.listen or "0.0.0.0")
        if listen is not None and not listen.is_unspecified:
            return str(listen)
        host = getattr(local, "host", None)
        if host and parse_ip(host) is not None:
            return normalize_host(host)
        return "0.0.0.0"
