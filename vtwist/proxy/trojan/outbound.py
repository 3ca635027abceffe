"""The ``trojan`` outbound at run time: TCP through :class:`TrojanClientEndpoint`, UDP as one
Trojan UDP connection per destination (as 4.34's client, which the UDP dispatcher calls once
per destination)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound
from vtwist.proxy.datagram_connections import ConnectionPerDestination
from vtwist.proxy.trojan.client import TrojanClientEndpoint
from vtwist.proxy.trojan.settings import TrojanOutboundSettings, TrojanServer
from vtwist.tunnel.dialer import direct_dialer

log = Logger(namespace="vtwist.trojan.outbound")


@implementer(IOutbound)
class TrojanOutbound:
    """Sends traffic through Trojan servers (round-robin over ``servers``)."""

    def __init__(self, reactor: Any, tag: str, settings: TrojanOutboundSettings,
                 stream: Any = None, dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings
        self.stream = stream
        #: ``(host, port) -> endpoint`` to a server: over ``stream``, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, stream)
        self._servers = itertools.cycle([(s, s.user.key) for s in settings.servers])

    def transportEndpoint(self, server: TrojanServer) -> Any:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)

    def endpointFor(self, destination: Destination) -> TrojanClientEndpoint:
        """A TrojanClientEndpoint through the next server to ``destination`` (a Trojan UDP
        connection for a udp destination)."""
        server, key = next(self._servers)
        return TrojanClientEndpoint(self.transportEndpoint(server), key, destination,
                                    udp=destination.network == "udp", reactor=self.reactor)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> ConnectionPerDestination:
        """A UDP session carried as Trojan UDP connections."""
        return ConnectionPerDestination(self, onPacket, onClose, "trojan UDP")


def build_outbound(outbound: Any, ctx: Any) -> TrojanOutbound:
    """The registry's builder: a TrojanOutbound from its config."""
    return TrojanOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                          ctx.dialer(outbound))
