"""The ``vmess`` outbound at run time: TCP through :class:`VMessClientEndpoint`, UDP as
VMess UDP connections; with ``mux``, both as sessions on shared Mux.Cool carriers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound
from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.datagram_connections import ConnectionPerDestination
from vtwist.proxy.mux.client import MuxPool
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.header import CMD_MUX, CMD_TCP, CMD_UDP, MUX_DESTINATION, SwitchAccount
from vtwist.proxy.vmess.picker import ServerPicker
from vtwist.proxy.vmess.settings import VMessOutboundSettings, VMessServer
from vtwist.tunnel.dialer import direct_dialer

log = Logger(namespace="vtwist.vmess.outbound")


@implementer(IOutbound)
class VMessOutbound:
    """Sends traffic through VMess servers (round-robin over servers and users)."""

    def __init__(self, reactor: Any, tag: str, settings: VMessOutboundSettings,
                 stream: Any = None, dialer: Callable[[str, int], Any] | None = None,
                 mux: Any = None, policy: Policy = DEFAULT_POLICY) -> None:
        self.reactor = reactor
        #: user levels' timeouts: ``handshake`` is how long a server may stay silent
        #: after a request before a warning says why it probably refused
        self.policy = policy
        self.tag = tag
        self.settings = settings
        self.stream = stream
        #: ``(host, port) -> endpoint`` to a server: over ``stream``, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, stream)
        self.picker = ServerPicker(settings.servers)
        #: the Mux.Cool pool when ``mux`` is enabled: every stream and UDP flow rides it
        self.mux: MuxPool | None = None
        if mux is not None:
            self.mux = MuxPool(self._muxCarrier, mux.concurrency, reactor=reactor)

    def transportEndpoint(self, server: VMessServer) -> Any:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)

    def _muxCarrier(self) -> VMessClientEndpoint:
        """A new Mux.Cool carrier: command 3 to ``v1.mux.cool`` via the next server/user."""
        choice = self.picker.pick(self.reactor.seconds())
        origin = choice.server.address
        return VMessClientEndpoint(
            self.transportEndpoint(choice.server), choice.account, MUX_DESTINATION,
            choice.security, reactor=self.reactor, command=CMD_MUX,
            onCommand=lambda offer: self.switchAccount(offer, origin),
            chunk_size=self.settings.chunk_size,
            answer_timeout=self.policy.level(choice.account.level).handshake)

    def endpointFor(self, destination: Destination) -> Any:
        """A VMessClientEndpoint through the next server/user to ``destination``
        (a VMess UDP connection for a udp destination); with mux, a session on a shared
        carrier (:class:`~vtwist.proxy.mux.client.MuxClientEndpoint`)."""
        if self.mux is not None:
            return self.mux.endpoint(destination)
        choice = self.picker.pick(self.reactor.seconds())
        command = CMD_UDP if destination.network == "udp" else CMD_TCP
        origin = choice.server.address
        return VMessClientEndpoint(
            self.transportEndpoint(choice.server), choice.account, destination,
            choice.security, reactor=self.reactor, command=command,
            onCommand=lambda offer: self.switchAccount(offer, origin),
            chunk_size=self.settings.chunk_size,
            answer_timeout=self.policy.level(choice.account.level).handshake)

    def switchAccount(self, offer: SwitchAccount, origin: str) -> None:
        """A server's SwitchAccount: later connections take the offered server in turn."""
        choice = self.picker.offer(offer, origin, self.reactor.seconds())
        log.debug("vmess: taking {host}:{port} in turn until {until:.0f}",
                  host=choice.server.address, port=choice.server.port, until=choice.expires)

    def close(self) -> Deferred[Any] | None:
        """Close the mux carriers (when mux is on); fires once they are closed."""
        return self.mux.close() if self.mux is not None else None

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> ConnectionPerDestination:
        """A UDP session carried as VMess UDP connections."""
        return ConnectionPerDestination(self, onPacket, onClose, "vmess UDP")


def build_outbound(outbound: Any, ctx: Any) -> VMessOutbound:
    """The registry's builder: a VMessOutbound from its config."""
    return VMessOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                         ctx.dialer(outbound), mux=getattr(outbound, "mux", None),
                         policy=ctx.policy)

