"""The ``trojan`` outbound at run time: TCP through :class:`TrojanClientEndpoint`, UDP as one
Trojan UDP connection per destination (as 4.34's client, which the UDP dispatcher calls once
per destination)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.trojan.client import TrojanClientEndpoint
from vtwist.proxy.trojan.settings import TrojanOutboundSettings, TrojanServer
from vtwist.transport.stack import client_endpoint
from vtwist.tunnel.packets import PacketQueue

log = Logger(namespace="vtwist.trojan.outbound")


class _Datagrams(Protocol):
    """Receives the datagrams of one Trojan UDP connection."""

    def __init__(self, session: TrojanPacketSession, dest: Destination) -> None:
        self.session = session
        self.dest = dest

    def dataReceived(self, data: bytes) -> None:
        self.session.onPacket(data, self.dest)

    def connectionLost(self, reason: Any = None) -> None:
        self.session._lost(self.dest, self)


@implementer(IPacketSession)
class TrojanPacketSession:
    """UDP through Trojan: one Trojan UDP connection per destination."""

    def __init__(self, outbound: TrojanOutbound, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.outbound = outbound
        self.onPacket = onPacket
        self.onClose = onClose
        self.closed = False
        self._conns: dict[Destination, Any] = {}
        self._queued: dict[Destination, PacketQueue] = {}

    def send(self, data: bytes, destination: Destination) -> None:
        """Send one datagram to ``destination`` (connecting on first use)."""
        if self.closed:
            return
        dest = destination.with_network("udp")
        proto = self._conns.get(dest)
        if proto is not None:
            proto.transport.write(data)
            return
        queue = self._queued.get(dest)
        if queue is not None:
            queue.push(data)
            return
        queue = self._queued[dest] = PacketQueue()
        queue.push(data)
        d = self.outbound.endpointFor(dest).connect(
            Factory.forProtocol(lambda: _Datagrams(self, dest)))

        def connected(proto: _Datagrams) -> None:
            queued = self._queued.pop(dest)
            if self.closed:
                proto.transport.loseConnection()
                return
            self._conns[dest] = proto
            for packet in queued.take():
                proto.transport.write(packet)

        def failed(f: Any) -> None:
            self._queued.pop(dest, None)
            log.info("trojan UDP to {dest}: {why}", dest=dest, why=f.getErrorMessage())

        d.addCallbacks(connected, failed)

    def _lost(self, dest: Destination, proto: Any) -> None:
        if self._conns.get(dest) is proto:
            del self._conns[dest]

    def close(self) -> None:
        """Close every Trojan UDP connection of this session."""
        if self.closed:
            return
        self.closed = True
        for proto in list(self._conns.values()):
            proto.transport.loseConnection()
        self._conns.clear()


@implementer(IOutbound)
class TrojanOutbound:
    """Sends traffic through Trojan servers (round-robin over ``servers``)."""

    def __init__(self, reactor: Any, tag: str, settings: TrojanOutboundSettings,
                 stream: Any = None, dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings
        self.stream = stream
        #: ``(host, port) -> endpoint`` to the server (proxySettings); None: over ``stream``
        self.dialer = dialer
        self._servers = itertools.cycle([(s, s.user.key) for s in settings.servers])

    def transportEndpoint(self, server: TrojanServer) -> Any:
        """The endpoint that reaches ``server``: through the dialer, else over the
        configured streamSettings."""
        if self.dialer is not None:
            return self.dialer(server.address, server.port)
        return client_endpoint(self.reactor, server.address, server.port, self.stream)

    def endpointFor(self, destination: Destination) -> TrojanClientEndpoint:
        """A TrojanClientEndpoint through the next server to ``destination`` (a Trojan UDP
        connection for a udp destination)."""
        server, key = next(self._servers)
        return TrojanClientEndpoint(self.transportEndpoint(server), key, destination,
                                    udp=destination.network == "udp", reactor=self.reactor)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> TrojanPacketSession:
        """A UDP session carried as Trojan UDP connections."""
        return TrojanPacketSession(self, onPacket, onClose)


def build_outbound(outbound: Any, ctx: Any) -> TrojanOutbound:
    """The registry's builder: a TrojanOutbound from its config."""
    dialer = ctx.dialer(outbound) if hasattr(ctx, "dialer") else None
    return TrojanOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream, dialer)
