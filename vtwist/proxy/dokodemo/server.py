"""dokodemo-door's TCP side and its factory.

Every accepted connection is handed to the tunnel service at once (no handshake) with the
inbound's fixed destination, or, with ``followRedirect``, the connection's original one
(:mod:`vtwist.proxy.dokodemo.redirect`). The factory also owns the inbound's UDP listener
(:meth:`DokodemoFactory.listenDatagrams`) and, for TPROXY, its transparent TCP listener
(:meth:`DokodemoFactory.streamEndpoint`); :mod:`vtwist.service` asks it for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, format_address, parse_ip
from vtwist.interfaces import IInboundReply
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.dokodemo.redirect import (
    TransparentTCPServerEndpoint,
    is_own_address,
    listen_transparent_udp,
    original_destination,
    socket_of,
)
from vtwist.proxy.dokodemo.udp import MAX_DATAGRAM, DokodemoDatagrams
from vtwist.transport.layer import set_no_delay
from vtwist.transport.reuseport import listen_udp
from vtwist.transport.stack import server_endpoint
from vtwist.tunnel.failures import ConnectFailure
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.service import TunnelService
from vtwist.tunnel.stream import StreamTunnel

if TYPE_CHECKING:
    from vtwist.proxy.dokodemo.settings import DokodemoSettings

log = Logger(namespace="vtwist.dokodemo")


@implementer(IInboundReply)
class DokodemoReply:
    """Nothing to say on success; on failure the client's connection closes."""

    wantsBound = False  # succeeded() ignores the outbound's address

    def __init__(self, protocol: DokodemoProtocol) -> None:
        self.protocol = protocol

    def succeeded(self, bound: Any) -> None:
        """The outbound connected: the relay starts, the client hears nothing from us."""

    def failed(self, kind: ConnectFailure, reason: Failure) -> None:
        """The outbound could not be reached: close the client's connection."""
        self.protocol.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class DokodemoProtocol(Protocol):
    """One TCP connection of a dokodemo-door inbound."""

    def __init__(self, factory: DokodemoFactory) -> None:
        self.factory = factory
        self.tunnel: StreamTunnel | None = None
        self.source = "unknown"

    def connectionMade(self) -> None:
        """Route and connect right away."""
        factory = self.factory
        self.source = format_address(self.transport.getPeer())
        set_no_delay(self.transport)
        destination = factory.destinationFor(self.transport)
        if destination is None:
            factory.tunnels.reject(self.source, "dokodemo-door", "unable to get destination")
            self.transport.loseConnection()
            return
        self.tunnel = factory.tunnels.openStream(
            self.transport, destination, DokodemoReply(self), inbound_tag=factory.tag,
            source=self.source, policy=factory.policy, sniff=factory.sniffing)

    def dataReceived(self, data: bytes) -> None:
        """The client's bytes, to the tunnel."""
        if self.tunnel is not None:
            self.tunnel.received(data)

    def readConnectionLost(self) -> None:
        """The client half-closed its side."""
        if self.tunnel is not None:
            self.tunnel.eof()

    def writeConnectionLost(self) -> None:
        """Our write side is closed; the relay handles the rest."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The client's connection is gone."""
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.lost(reason)


class DokodemoFactory(InboundFactory):
    """Builds :class:`DokodemoProtocol` for one dokodemo-door inbound, and its UDP listeners.

    ``tproxy`` is the listening sockets' mode: "off", "redirect" (iptables REDIRECT) or
    "tproxy" (``IP_TRANSPARENT``); ``settings.follow_redirect`` decides whether the original
    destination replaces ``address:port``.
    """

    protocol = DokodemoProtocol  # type: ignore[assignment]

    def __init__(self, tunnels: TunnelService, settings: DokodemoSettings, *, tag: str = "",
                 policy: LevelPolicy = DEFAULT_LEVEL, tproxy: str = "off",
                 mark: int = 0) -> None:
        super().__init__(tunnels, tag)
        self.settings = settings
        self.policy = policy
        self.tproxy = tproxy
        self.mark = mark
        self.tcp = None if settings.address is None else \
            Destination.tcp(settings.address, settings.port)
        self.udp = None if settings.address is None else \
            Destination.udp(settings.address, settings.port)
        self.datagrams: list[DokodemoDatagrams] = []
        #: the ports of this door's transparent TCP listeners
        self.tproxyPorts: set[int] = set()

    # -- TCP -----------------------------------------------------------------------------
    def destinationFor(self, transport: Any) -> Destination | None:
        """Where a connection goes: the original destination when following redirects and
        it is known, else ``address:port`` (None when neither is known)."""
        if self.settings.follow_redirect:
            original = self.originalDestination(transport)
            if original is not None:
                return Destination.tcp(original[0], original[1] or self.settings.port)
        return self.tcp

    def originalDestination(self, transport: Any) -> tuple[str, int] | None:
        """``(ip, port)`` the connection was going to before iptables sent it here."""
        if self.tproxy == "tproxy":
            local = transport.getHost()
            host = getattr(local, "host", None)
            if host is None or parse_ip(host) is None:
                return None
            if local.port in self.tproxyPorts and is_own_address(host):
                # made straight to the door (not TPROXY'd): following it would dial the
                # door itself, and that connection the door again, without end
                return None
            return host, local.port
        if self.tproxy == "redirect":
            sock = socket_of(transport)
            if sock is None:
                return None
            found = original_destination(sock)
            if found is None:
                log.debug("{source}: no original destination (not redirected?)",
                          source=format_address(transport.getPeer()))
            return found
        return None

    def streamEndpoint(self, reactor: Any, listen: str, port: int,
                       stream: Any) -> IStreamServerEndpoint | None:
        """The TCP listener for ``listen:port``: none without tcp in ``network``, a
        transparent one for TPROXY, else the ordinary layered one (service.py hook)."""
        if "tcp" not in self.settings.networks:
            return None
        if self.tproxy == "tproxy":
            self.tproxyPorts.add(port)
            return TransparentTCPServerEndpoint(reactor, port, listen, mark=self.mark)
        return server_endpoint(reactor, listen, port, stream)

    # -- UDP -----------------------------------------------------------------------------
    @property
    def listensDatagrams(self) -> bool:
        """True when ``network`` includes udp (service.py hook)."""
        return "udp" in self.settings.networks

    def listenDatagrams(self, reactor: Any, listen: str, port: int) -> Any:
        """Start the UDP listener on ``listen:port``; returns the IListeningPort (raises
        CannotListenError). Stopping it closes its flows (service.py hook)."""
        protocol = DokodemoDatagrams(
            reactor, self.tunnels, self.udp, inbound_tag=self.tag,
            idle_timeout=self.policy.conn_idle,
            follow_original=self.settings.follow_redirect and self.tproxy == "tproxy",
            mark=self.mark)
        if self.tproxy == "tproxy":
            listening = listen_transparent_udp(reactor, port, protocol, listen, self.mark,
                                               MAX_DATAGRAM)
        else:
            listening = listen_udp(reactor, port, protocol, interface=listen,
                                   maxPacketSize=MAX_DATAGRAM)
        self.datagrams.append(protocol)
        return listening

    def closeAll(self) -> None:
        """Close every TCP connection and UDP flow of this inbound."""
        super().closeAll()
        for protocol in self.datagrams:
            protocol.closeAll()
