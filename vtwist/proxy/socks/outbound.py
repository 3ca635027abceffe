"""The ``socks`` outbound at run time: TCP through :class:`SocksClientEndpoint` (``CONNECT``),
UDP through a ``UDP ASSOCIATE`` per packet session. With proxySettings both the control
connection and the datagrams to the relay go through the proxy outbound (V2Ray 4.34's
``Dial`` of a ``udp:`` destination)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, normalize_host, parse_ip
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.server_datagrams import ServerDatagrams
from vtwist.proxy.socks.client import SocksClientEndpoint
from vtwist.proxy.socks.codec import (
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    ProtocolError,
    build_datagram,
    parse_datagram,
)
from vtwist.proxy.upstream import ServerPicker, UpstreamServer, UpstreamSettings
from vtwist.tunnel.dialer import direct_dialer, packet_path

log = Logger(namespace="vtwist.socks.outbound")

_ANY = ("0.0.0.0", "::")


@implementer(IStreamClientEndpoint)
class RefusingEndpoint:
    """Fails every connect with ``reason`` (a destination this outbound cannot serve)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Fail at once."""
        return defer.fail(ConnectError(self.reason))


class _Control(Protocol):
    """The association's TCP control connection: its end ends the session."""

    def __init__(self, session: SocksPacketSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session._associated(self)

    def dataReceived(self, data: bytes) -> None:
        """A server says nothing more on the control connection; ignore it if it does."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.session._controlLost(reason)


@implementer(IPacketSession)
class SocksPacketSession:
    """UDP through a SOCKS5 server: one ``UDP ASSOCIATE`` for the whole session.

    Datagrams wait while the association opens; then each goes to the relay address the
    server returned (the server's own address when it answers ``0.0.0.0``, as V2Ray does)
    framed per RFC 1928, from a local socket or through the proxy outbound
    (:class:`~vtwist.proxy.server_datagrams.ServerDatagrams`). Replies from the relay reach
    ``onPacket`` with their source; the session ends when the control connection closes.
    """

    def __init__(self, outbound: SocksOutbound, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.outbound = outbound
        self.onPacket = onPacket
        self.onClose = onClose
        self.closed = False
        self.control: _Control | None = None
        self.via = packet_path(outbound.dialer)
        self.datagrams = ServerDatagrams(outbound.reactor, self.via, self._relayed, self._end,
                                         "socks")
        self.server, endpoint = outbound.associateEndpoint()
        self._connecting: defer.Deferred[Any] | None = endpoint.connect(
            Factory.forProtocol(lambda: _Control(self)))
        self._connecting.addErrback(self._connectFailed)

    # -- the association ---------------------------------------------------------------
    def _associated(self, control: _Control) -> None:
        self._connecting = None
        self.control = control
        if self.closed:
            control.transport.loseConnection()
            return
        reply = control.transport.reply
        host = reply.host
        if host in _ANY:
            host = self.server.address if self.via is not None else self._serverIP(control)
        self.datagrams.open(host, reply.port)

    def _serverIP(self, control: _Control) -> str:
        """The server's address: the control connection's peer, else the configured one."""
        peer = getattr(control.transport.getPeer(), "host", None)
        if isinstance(peer, str) and parse_ip(peer) is not None:
            return normalize_host(peer)
        return self.server.address

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if not failure.check(defer.CancelledError):
            self._end(f"UDP ASSOCIATE failed: {failure.getErrorMessage()}")

    def _controlLost(self, reason: Failure | None) -> None:
        self.control = None
        if not self.closed:
            self._end("the control connection closed")

    def _end(self, why: str) -> None:
        """The session ends on its own: log, free, tell the owner once."""
        if self.closed:
            return
        log.info("socks UDP via {server}:{port}: {why}", server=self.server.address,
                 port=self.server.port, why=why)
        self.close()
        self.onClose()

    # -- datagrams -----------------------------------------------------------------------
    def send(self, data: bytes, destination: Destination) -> None:
        """Send one datagram (queued until the relay is known)."""
        if self.closed:
            return
        try:
            packet = build_datagram(destination.host, destination.port, data)
        except ValueError as e:
            log.info("socks UDP to {dest}: cannot frame: {e}", dest=destination, e=e)
            return
        self.datagrams.send(packet)

    def _relayed(self, data: bytes) -> None:
        """One datagram from the relay: unframed and handed on (fragments dropped)."""
        try:
            datagram = parse_datagram(data)
        except ProtocolError as e:
            log.debug("socks UDP: bad datagram from the relay: {e}", e=e)
            return
        if datagram.frag != 0:
            return  # fragments are dropped, as in V2Ray
        self.onPacket(datagram.payload, Destination.udp(datagram.host, datagram.port))

    # -- the end -------------------------------------------------------------------------
    def close(self) -> None:
        """End the association: close the control connection and the UDP path."""
        if self.closed:
            return
        self.closed = True
        self.datagrams.close()
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if self.control is not None:
            control, self.control = self.control, None
            control.transport.loseConnection()


@implementer(IOutbound)
class SocksOutbound:
    """Sends traffic through SOCKS5 servers (servers in turn, a random user of each)."""

    def __init__(self, reactor: Any, tag: str, settings: UpstreamSettings, stream: Any = None,
                 policy: Policy = DEFAULT_POLICY,
                 dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        #: ``(host, port) -> endpoint`` to a server: over the stream, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, stream)
        self.tag = tag
        self.settings = settings
        self.stream = stream
        self.policy = policy
        self.picker = ServerPicker(settings.servers)

    def transportEndpoint(self, server: UpstreamServer) -> IStreamClientEndpoint:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)  # type: ignore[no-any-return]

    def _endpoint(self, destination: Destination, command: int
                  ) -> tuple[UpstreamServer, SocksClientEndpoint]:
        server = self.picker.pick()
        user = server.pick_user()
        level = user.level if user is not None else 0
        lower = self.transportEndpoint(server)
        return server, SocksClientEndpoint(
            lower, destination, command=command, reactor=self.reactor,
            username=user.user.encode() if user is not None else None,
            password=user.password.encode() if user is not None else b"",
            timeout=self.policy.level(level).handshake)

    def endpointFor(self, destination: Destination) -> IStreamClientEndpoint:
        """A SocksClientEndpoint (``CONNECT``) through the next server to ``destination``."""
        if destination.network != "tcp":
            return RefusingEndpoint("the socks outbound carries UDP as packet sessions only")
        return self._endpoint(destination, CMD_CONNECT)[1]

    def associateEndpoint(self) -> tuple[UpstreamServer, SocksClientEndpoint]:
        """The next server and an endpoint whose connection is a ``UDP ASSOCIATE``."""
        return self._endpoint(Destination.udp("0.0.0.0", 0), CMD_UDP_ASSOCIATE)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> SocksPacketSession:
        """A UDP session through a ``UDP ASSOCIATE``."""
        return SocksPacketSession(self, onPacket, onClose)


def build_outbound(outbound: Any, ctx: Any) -> SocksOutbound:
    """The registry's builder: a SocksOutbound from its config."""
    return SocksOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                         ctx.policy, ctx.dialer(outbound))
