"""The SOCKS inbound's Protocol and Factory: handshake, then a tunnel or a UDP association.

:class:`SocksServerProtocol` drives a :class:`~vtwist.proxy.socks.codec.ServerCodec` under the
policy's handshake timeout. For CONNECT it hands its transport, the destination and any early
bytes to the tunnel service (:mod:`vtwist.tunnel`), which connects, answers through
:class:`SocksReply` with the reply code that matches the outcome, and relays. For UDP
ASSOCIATE it opens a :class:`~vtwist.proxy.socks.udp.UDPAssociation` that lives as long as the
TCP connection. Every refused or broken handshake is one access line (``from ... rejected
...``) and a close.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, format_address, normalize_host, parse_ip
from vtwist.interfaces import IInboundReply
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.credentials import password_ok
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
from vtwist.transport.layer import set_no_delay
from vtwist.tunnel.failures import ConnectFailure, classify
from vtwist.tunnel.handshakes import handshakes_of, start_handshake
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.service import TunnelService
from vtwist.tunnel.stream import StreamTunnel

log = Logger(namespace="vtwist.socks")

_KIND_REPLIES = {
    ConnectFailure.REFUSED: ReplyCode.CONNECTION_REFUSED,
    ConnectFailure.TIMED_OUT: ReplyCode.TTL_EXPIRED,
    ConnectFailure.HOST_UNREACHABLE: ReplyCode.HOST_UNREACHABLE,
    ConnectFailure.NETWORK_UNREACHABLE: ReplyCode.NETWORK_UNREACHABLE,
    ConnectFailure.OTHER: ReplyCode.GENERAL_FAILURE,
}


def reply_for_failure(failure: Failure) -> ReplyCode:
    """The SOCKS5 reply code that describes why an outbound connection failed."""
    return _KIND_REPLIES[classify(failure)]


class Phase(Enum):
    """Lifecycle of one SOCKS connection."""

    HANDSHAKE = "handshake"
    TUNNEL = "tunnel"
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
        self.tunnel: StreamTunnel | None = None
        self.association: UDPAssociation | None = None
        self._timer: IDelayedCall | None = None
        self._began = 0.0

    # -- connection events -------------------------------------------------------------
    def connectionMade(self) -> None:
        """Start the handshake clock."""
        self.source = format_address(self.transport.getPeer())
        set_no_delay(self.transport)
        factory = self.factory
        reactor = factory.reactor
        self._began = reactor.seconds()  # for the handshake latency metric
        self._timer = start_handshake(factory, self, factory.policy.handshake,
                                      self._handshakeTimeout)

    def dataReceived(self, data: bytes) -> None:
        """Handshake bytes, or the tunnel's payload, depending on the phase."""
        phase = self.phase
        if phase is Phase.TUNNEL:
            self.tunnel.received(data)  # type: ignore[union-attr]
        elif phase is Phase.HANDSHAKE:
            self._handshake(data)
        # UDP: the control connection carries nothing; CLOSED: ignore.

    def readConnectionLost(self) -> None:
        """The client half-closed its side."""
        phase = self.phase
        if phase is Phase.TUNNEL:
            self.tunnel.eof()  # type: ignore[union-attr]
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
        if self.association is not None:
            self.association.close()
        if phase is Phase.TUNNEL and self.tunnel is not None:
            self.tunnel.lost(reason)

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
        ok = password_ok(expected, credentials.password)  # same time for unknown users
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

    def _handshakeDone(self) -> None:
        """A valid request: stop the deadline, count how long the handshake took."""
        self._cancelTimer()
        factory = self.factory
        stats = getattr(factory.tunnels, "stats", None)
        if stats is not None:
            stats.handshake("socks", factory.reactor.seconds() - self._began)

    def _refuse(self, code: ReplyCode, why: str) -> None:
        self.transport.write(self.codec.send(Reply(code)))
        self._reject(why)

    def _reject(self, why: str) -> None:
        """One access line, then close."""
        self.factory.tunnels.reject(self.source, "socks", why)
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
        limit = handshakes_of(self.factory)
        if limit is not None:
            limit.leave(self)

    def _close(self) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self._cancelTimer()
            if self.association is not None:
                self.association.close()
            self.transport.loseConnection()

    # -- CONNECT -----------------------------------------------------------------------
    def _connect(self, destination: Destination) -> None:
        self._handshakeDone()
        self.phase = Phase.TUNNEL
        early = self.codec.take_trailing_data()
        factory = self.factory
        self.tunnel = factory.tunnels.openStream(
            self.transport, destination, SocksReply(self), early=[early] if early else None,
            inbound_tag=factory.tag, source=self.source, email=self.email,
            policy=factory.policy, sniff=factory.sniffing)

    # -- UDP ASSOCIATE -----------------------------------------------------------------
    def _associate(self, request: Request) -> None:
        self._handshakeDone()
        factory = self.factory
        peer = self.transport.getPeer()
        association = UDPAssociation(
            factory.reactor, factory.tunnels, getattr(peer, "host", ""),
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


@lru_cache(maxsize=64)  # the outbounds' few local addresses
def _reply_host(host: Any) -> str:
    """The address a reply names for an outbound's local ``host``: itself when it is an IP
    (normalised), else 0.0.0.0."""
    return normalize_host(host) if host and parse_ip(host) is not None else "0.0.0.0"


@implementer(IInboundReply)
class SocksReply:
    """The SOCKS reply once the tunnel knows whether the outbound connected."""

    def __init__(self, protocol: SocksServerProtocol) -> None:
        self.protocol = protocol

    def succeeded(self, bound: Any) -> None:
        """``SUCCEEDED`` with the outbound's local address (0.0.0.0:0 when it has none)."""
        host = _reply_host(getattr(bound, "host", None))
        port = getattr(bound, "port", 0) or 0
        protocol = self.protocol
        protocol.transport.write(protocol.codec.send(Reply(ReplyCode.SUCCEEDED, host, port)))

    def failed(self, kind: ConnectFailure, reason: Failure) -> None:
        """The reply code that describes the failure, then close."""
        code = _KIND_REPLIES[kind]
        protocol = self.protocol
        protocol.transport.write(protocol.codec.send(Reply(code)))
        protocol._close()


class SocksServerFactory(InboundFactory):
    """Builds :class:`SocksServerProtocol` for one socks inbound.

    ``accounts`` maps user name to password (bytes); ``None`` means no authentication.
    ``udp`` enables UDP ASSOCIATE; the association's socket binds on ``listen`` and the reply
    names ``udp_address`` if given (V2Ray's ``settings.ip``), else the address the client
    reached us on.
    """

    protocol = SocksServerProtocol  # type: ignore[assignment]

    def __init__(self, tunnels: TunnelService, *, tag: str = "",
                 accounts: dict[bytes, bytes] | None = None, udp: bool = False,
                 udp_address: str | None = None, listen: str = "0.0.0.0",
                 policy: LevelPolicy = DEFAULT_LEVEL,
                 udp_idle_timeout: float = UDP_IDLE_TIMEOUT) -> None:
        super().__init__(tunnels, tag)
        self.accounts = accounts
        self.udp = udp
        self.udp_address = udp_address
        self.listen = listen
        self.policy = policy
        self.udp_idle_timeout = udp_idle_timeout

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
