"""The ``vless`` outbound at run time: TCP through :class:`VLESSClientEndpoint`, UDP as VLESS
UDP connections (one per destination, length-prefixed datagrams); with ``mux``, both as
sessions on shared Mux.Cool carriers (VLESS command 3, as V2Ray 4.34)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound
from vtwist.proxy.datagram_connections import ConnectionPerDestination
from vtwist.proxy.mux.client import MuxPool
from vtwist.proxy.vless.client import VLESSClientEndpoint
from vtwist.proxy.vless.codec import CMD_MUX, CMD_TCP, CMD_UDP, MUX_DESTINATION
from vtwist.proxy.vless.settings import VLESSOutboundSettings, VLESSServer
from vtwist.tunnel.dialer import direct_dialer


@implementer(IOutbound)
class VLESSOutbound:
    """Sends traffic through VLESS servers (round robin over servers and their users)."""

    def __init__(self, reactor: Any, tag: str, settings: VLESSOutboundSettings,
                 stream: Any = None, dialer: Callable[[str, int], Any] | None = None,
                 mux: Any = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings
        self.stream = stream
        #: ``(host, port) -> endpoint`` to a server: over ``stream``, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, stream)
        self._choices = itertools.cycle([(s, u) for s in settings.servers for u in s.users])
        #: the Mux.Cool pool when ``mux`` is enabled: every stream and UDP flow rides it
        self.mux: MuxPool | None = None
        if mux is not None:
            self.mux = MuxPool(self._muxCarrier, mux.concurrency, reactor=reactor)

    def transportEndpoint(self, server: VLESSServer) -> Any:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)

    def _muxCarrier(self) -> VLESSClientEndpoint:
        """A new Mux.Cool carrier: command 3 (no address) via the next server/user."""
        server, account = next(self._choices)
        return VLESSClientEndpoint(self.transportEndpoint(server), account, MUX_DESTINATION,
                                   reactor=self.reactor, command=CMD_MUX)

    def endpointFor(self, destination: Destination) -> Any:
        """A VLESSClientEndpoint through the next server/user to ``destination`` (a VLESS
        UDP connection for a udp destination); with mux, a session on a shared carrier."""
        if self.mux is not None:
            return self.mux.endpoint(destination)
        server, account = next(self._choices)
        command = CMD_UDP if destination.network == "udp" else CMD_TCP
        return VLESSClientEndpoint(self.transportEndpoint(server), account, destination,
                                   reactor=self.reactor, command=command)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> ConnectionPerDestination:
        """A UDP session carried as VLESS UDP connections (the session logic is VMess's:
        one connection per destination, datagrams queued while it connects)."""
        return ConnectionPerDestination(self, onPacket, onClose, "vless UDP")

    def close(self) -> Deferred[Any] | None:
        """Close the mux carriers (when mux is on); fires once they are closed."""
        return self.mux.close() if self.mux is not None else None


def build_outbound(outbound: Any, ctx: Any) -> VLESSOutbound:
    """The registry's builder: a VLESSOutbound from its config."""
    return VLESSOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                         ctx.dialer(outbound), mux=getattr(outbound, "mux", None))
