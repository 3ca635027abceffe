"""The SOCKS inbound's Protocol and Factory: handshake, then a tunnel or a UDP association.

:class:`SocksServerProtocol` drives a :class:`~vtwist.proxy.socks.codec.ServerCodec` under the
policy's handshake timeout. For CONNECT it hands its transport, the destination and any early
bytes to the tunnel service (:mod:`vtwist.tunnel`), which connects, answers through the
protocol's :meth:`~SocksServerProtocol.succeeded` or :meth:`~SocksServerProtocol.failed` with
the reply code that matches the outcome, and relays. For UDP ASSOCIATE it opens a
:class:`~vtwist.proxy.socks.udp.UDPAssociation` that lives as long as the TCP connection.
Every refused or broken handshake is one access line (``from ... rejected ...``) and a close.
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
    Credentials,
    Greeting,
    ProtocolError,
    ReplyCode,
    Request,
    ServerCodec,
)
from vtwist.proxy.socks.udp import UDP_IDLE_TIMEOUT, UDPAssociation
from vtwist.transport.layer import set_no_delay
from vtwist.tunnel.failures import ConnectFailure, classify
from vtwist.tunnel.handshakes import start_handshake
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


_HANDSHAKE, _TUNNEL, _UDP, _CLOSED = Phase.HANDSHAKE, Phase.TUNNEL, Phase.UDP, Phase.CLOSED


@lru_cache(maxsize=64)  # the outbounds' few local addresses
def _reply_host(host: Any) -> str:
    """The address a reply names for an outbound's local ``host``: itself when it is an IP
    (normalised), else 0.0.0.0."""
    return normalize_host(host) if host and parse_ip(host) is not None else "0.0.0.0"


@implementer(IHalfCloseableProtocol, IInboundReply)
class SocksServerProtocol(Protocol):
    """One client connection of the SOCKS inbound, and its tunnel's reply
    (:meth:`succeeded`, :meth:`failed`).

    Once a CONNECT's tunnel is open, the client's bytes and half-close go straight to it:
    ``dataReceived`` and ``readConnectionLost`` are then the tunnel's own methods (bound on
    the instance), not a call through this protocol for every chunk.
    """

    phase = _HANDSHAKE
    source = "unknown"
    email: str | None = None
    tunnel: StreamTunnel | None = None
    association: UDPAssociation | None = None
    _timer: IDelayedCall | None = None
    _began = 0.0
    #: :meth:`succeeded` names the outbound's local address (the tunnel asks for it)
    wantsBound = True

    def __init__(self, factory: SocksServerFactory) -> None:
        self.factory = factory
        self.codec = ServerCodec()

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
        """Handshake bytes (once the tunnel is open, its own ``received`` takes the payload:
        see the class docstring). UDP: the control connection carries nothing; CLOSED:
        ignored."""
        phase = self.phase
        if phase is not _HANDSHAKE:
            if phase is _TUNNEL:  # (the tunnel was opening)
                self.tunnel.received(data)  # type: ignore[union-attr]
            return
        codec = self.codec
        while True:
            try:
                events = codec.receive_data(data)
            except ProtocolError as e:
                if e.reply:
                    self.transport.write(e.reply)
                self._reject(str(e))
                return
            if not events:
                return
            for event in events:
                if self.phase is not _HANDSHAKE:
                    return
                kind = type(event)
                if kind is Request:
                    self._request(event)  # type: ignore[arg-type]
                elif kind is Greeting:
                    self._greeting(event)  # type: ignore[arg-type]
                elif kind is Credentials:
                    self._credentials(event)  # type: ignore[arg-type]
            # Our answer moved the handshake on: the client may have pipelined the next
            # message.
            if self.phase is not _HANDSHAKE or not codec.buffer:
                return
            data = b""

    def readConnectionLost(self) -> None:
        """The client half-closed its side."""
        phase = self.phase
        if phase is _TUNNEL:
            self.tunnel.eof()  # type: ignore[union-attr]
        elif phase is _HANDSHAKE:
            self._reject("connection closed during the handshake")
        elif phase is _UDP:
            self._close()

    def writeConnectionLost(self) -> None:
        """Our write side is closed; the relay handles the rest."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Free everything this connection holds."""
        phase, self.phase = self.phase, _CLOSED
        if phase is _TUNNEL:  # (nothing comes after this: the binding may stay)
            if self.tunnel is not None:
                self.tunnel.lost(reason)
            return
        if phase is _HANDSHAKE:
            self._cancelTimer()
        if self.association is not None:
            self.association.close()

    # -- handshake ---------------------------------------------------------------------
    def _greeting(self, greeting: Greeting) -> None:
        wanted = METHOD_PASSWORD if self.factory.accounts is not None else METHOD_NO_AUTH
        if wanted not in greeting.methods:
            self.transport.write(self.codec.choose_method(METHOD_NO_ACCEPTABLE))
            self._reject("no matching authentication method")
            return
        self.transport.write(self.codec.choose_method(wanted))

    def _credentials(self, credentials: Credentials) -> None:
        accounts = self.factory.accounts or {}
        expected = accounts.get(credentials.username)
        ok = password_ok(expected, credentials.password)  # same time for unknown users
        self.transport.write(self.codec.auth_result(ok))
        if not ok:
            self._reject("invalid username or password")
            return
        self.email = credentials.username.decode("utf-8", "replace")

    def _request(self, request: Request) -> None:
        command = request.command
        if request.version == SOCKS4:
            if self.factory.accounts is not None:
                self._refuse(ReplyCode.NOT_ALLOWED, "SOCKS4 is not allowed when auth is required")
                return
            if command != CMD_CONNECT:
                self._refuse(ReplyCode.COMMAND_NOT_SUPPORTED,
                             f"unsupported SOCKS4 command {command}")
                return
        if command == CMD_CONNECT:
            # (the codec's hosts are normalised already, as Destination.tcp would have them)
            self._connect(Destination("tcp", request.host, request.port))
        elif command == CMD_UDP_ASSOCIATE and self.factory.udp:
            self._associate(request)
        else:
            what = "UDP is not enabled" if command == CMD_UDP_ASSOCIATE else \
                f"unsupported command {command}"
            self._refuse(ReplyCode.COMMAND_NOT_SUPPORTED, what)

    def _handshakeDone(self) -> None:
        """A valid request: stop the deadline, count how long the handshake took."""
        factory = self.factory
        timer = self._timer  # (_cancelTimer, inline)
        if timer is not None:
            if timer.active():
                timer.cancel()
            self._timer = None
        limit = getattr(factory, "handshakes", None)
        if limit is not None:
            limit.leave(self)
        stats = getattr(factory.tunnels, "stats", None)
        if stats is not None:
            stats.handshake("socks", factory.reactor.seconds() - self._began)

    def _refuse(self, code: ReplyCode, why: str) -> None:
        self.transport.write(self.codec.reply(code))
        self._reject(why)

    def _reject(self, why: str) -> None:
        """One access line, then close."""
        self.factory.tunnels.reject(self.source, "socks", why)
        self._close()

    def _handshakeTimeout(self) -> None:
        self._timer = None
        if self.phase is _HANDSHAKE:
            self._reject(f"handshake timed out after {self.factory.policy.handshake:g}s")

    def _cancelTimer(self) -> None:
        timer = self._timer
        if timer is not None:
            if timer.active():
                timer.cancel()
            self._timer = None
        limit = getattr(self.factory, "handshakes", None)  # (handshakes_of, inline)
        if limit is not None:
            limit.leave(self)

    def _close(self) -> None:
        phase = self.phase
        if phase is not _CLOSED:
            self.phase = _CLOSED
            if phase is _TUNNEL:  # (the handshake's timer is gone already)
                # the client's bytes and half-close are ignored again (see the class
                # docstring)
                vars(self).pop("dataReceived", None)
                vars(self).pop("readConnectionLost", None)
            else:
                self._cancelTimer()
            if self.association is not None:
                self.association.close()
            self.transport.loseConnection()

    # -- CONNECT -----------------------------------------------------------------------
    def _connect(self, destination: Destination) -> None:
        self._handshakeDone()
        self.phase = _TUNNEL
        codec = self.codec
        early = codec.take_trailing_data() if codec.buffer else None
        factory = self.factory
        tunnel = self.tunnel = factory.tunnels.openStream(
            self.transport, destination, self, early=[early] if early else None,
            inbound_tag=factory.tag, source=self.source, email=self.email,
            policy=factory.policy, sniff=factory.sniffing)
        if self.phase is _TUNNEL:  # (not failed at once)
            self.dataReceived = tunnel.received  # type: ignore[method-assign]
            self.readConnectionLost = tunnel.eof  # type: ignore[method-assign]

    # -- the tunnel's answer (IInboundReply) -------------------------------------------
    def succeeded(self, bound: Any) -> None:
        """``SUCCEEDED`` with the outbound's local address (0.0.0.0:0 when it has none)."""
        if bound is None:
            self.transport.write(self.codec.reply(0))
            return
        host = _reply_host(getattr(bound, "host", None))
        self.transport.write(self.codec.reply(0, host, getattr(bound, "port", 0) or 0))

    def failed(self, kind: ConnectFailure, reason: Failure) -> None:
        """The reply code that describes the failure, then close."""
        self.transport.write(self.codec.reply(_KIND_REPLIES[kind]))
        self._close()

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
            self.transport.write(self.codec.reply(ReplyCode.GENERAL_FAILURE))
            self._close()
            return
        self.association = association
        self.phase = _UDP
        host = factory.udp_address or factory.udp_reply_host(self.transport.getHost())
        self.transport.write(self.codec.reply(ReplyCode.SUCCEEDED, host, port))
        log.debug("socks: {source} UDP associate on port {port}", source=self.source, port=port)


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
