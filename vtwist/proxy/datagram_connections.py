"""UDP over stream connections, one per destination: the packet session that VMess, VLESS
and Trojan outbounds share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IPacketSession
from vtwist.tunnel.packets import PacketQueue

log = Logger(namespace="vtwist.outbound")


class _Datagrams(Protocol):
    """Receives the datagrams of one UDP-carrying connection."""

    def __init__(self, session: ConnectionPerDestination, dest: Destination) -> None:
        self.session = session
        self.dest = dest

    def dataReceived(self, data: bytes) -> None:
        self.session.onPacket(data, self.dest)

    def connectionLost(self, reason: Any = None) -> None:
        self.session._lost(self.dest, self)


@implementer(IPacketSession)
class ConnectionPerDestination:
    """UDP through an outbound whose ``endpointFor`` a udp destination gives a connection
    that carries datagrams (VMess command 2, VLESS and Trojan UDP): one connection per
    destination, opened on the first datagram; datagrams wait in a bounded queue meanwhile.
    """

    def __init__(self, outbound: Any, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None], name: str = "UDP") -> None:
        self.outbound = outbound
        self.name = name
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
        endpoint = self.outbound.endpointFor(dest)
        factory = Factory.forProtocol(lambda: _Datagrams(self, dest))
        factory.noisy = False  # one per destination
        d = endpoint.connect(factory)

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
            log.info("{name} to {dest}: {why}", name=self.name, dest=dest,
                     why=f.getErrorMessage())

        d.addCallbacks(connected, failed)

    def _lost(self, dest: Destination, proto: Any) -> None:
        if self._conns.get(dest) is proto:
            del self._conns[dest]

    def close(self) -> None:
        """Close every connection of this session."""
        if self.closed:
            return
        self.closed = True
        for proto in list(self._conns.values()):
            proto.transport.loseConnection()
        self._conns.clear()
