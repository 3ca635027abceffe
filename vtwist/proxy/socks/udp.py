"""UDP ASSOCIATE: one UDP socket per association, relayed through the dispatcher.

The socket is bound on the inbound's listen address (port chosen by the system). Datagrams are
accepted only from the IP of the TCP control connection's client; fragmented ones (FRAG != 0)
are dropped. Each destination gets its own packet tunnel from the tunnel service (so routing
can pick an outbound per destination, as V2Ray does); a tunnel with no traffic either way for
``idle_timeout`` (closing after between T and 2T, like the relay) closes, and the next packet
opens a new one. The association itself ends with its TCP control connection
(:meth:`UDPAssociation.close`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vtwist.address import Destination, normalize_host
from vtwist.proxy.socks.codec import ProtocolError, build_datagram, parse_datagram
from vtwist.tunnel.packets import PacketTunnel
from vtwist.tunnel.service import TunnelService

log = Logger(namespace="vtwist.socks")

#: Seconds without a packet either way before a destination's session closes.
UDP_IDLE_TIMEOUT = 60.0
#: Open destination sessions per association; the least recently used is closed beyond it.
MAX_SESSIONS = 256
MAX_DATAGRAM = 65535


class _Session:
    """The packet tunnel for one destination, with its reply header."""

    __slots__ = ("destination", "header", "packets")

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        #: Replies are "from" the destination the client named: one header per session.
        self.header = build_datagram(destination.host, destination.port, b"")
        self.packets: PacketTunnel | None = None


class UDPAssociation(DatagramProtocol):
    """The UDP side of one SOCKS5 UDP ASSOCIATE."""

    def __init__(self, reactor: Any, tunnels: TunnelService, client_host: str, *,
                 inbound_tag: str = "", source: str = "", email: str | None = None,
                 idle_timeout: float = UDP_IDLE_TIMEOUT, max_sessions: int = MAX_SESSIONS) -> None:
        self.reactor = reactor
        self.tunnels = tunnels
        self.client_host = normalize_host(client_host)
        self.inbound_tag = inbound_tag
        self.source = source
        self.email = email
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.client_addr: tuple[Any, ...] | None = None
        self.sessions: OrderedDict[Destination, _Session] = OrderedDict()
        self.port: Any = None
        self.closed = False
        self.dropped = 0

    def listen(self, interface: str) -> int:
        """Bind the association's UDP socket on ``interface``; returns the port."""
        self.port = self.reactor.listenUDP(0, self, interface=interface,
                                           maxPacketSize=MAX_DATAGRAM)
        return self.port.getHost().port

    # -- from the client -----------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """A datagram from the client: check its origin, decode it, send it on."""
        if self.closed:
            return
        if addr != self.client_addr and normalize_host(addr[0]) != self.client_host:
            self.dropped += 1
            log.debug("UDP from {addr} dropped: not the association's client", addr=addr)
            return
        try:
            datagram = parse_datagram(data)
        except ProtocolError as e:
            self.dropped += 1
            log.debug("UDP from {addr} dropped: {why}", addr=addr, why=e)
            return
        if datagram.frag != 0:
            self.dropped += 1
            log.debug("UDP from {addr} dropped: fragment {frag}", addr=addr, frag=datagram.frag)
            return
        if not datagram.payload:
            return
        self.client_addr = addr
        try:
            destination = Destination.udp(datagram.host, datagram.port)
        except ValueError:
            self.dropped += 1
            return
        session = self.sessions.get(destination)
        if session is None:
            session = self._open(destination)
            if session is None:
                return
        else:
            self.sessions.move_to_end(destination)
        session.packets.send(datagram.payload, destination)  # type: ignore[union-attr]

    def _open(self, destination: Destination) -> _Session | None:
        while len(self.sessions) >= self.max_sessions:
            _, oldest = self.sessions.popitem(last=False)
            oldest.packets.close()  # type: ignore[union-attr]
        session = _Session(destination)

        def onPacket(data: bytes, source: Destination) -> None:
            self._reply(session, data)

        def onClose() -> None:
            if self.sessions.get(destination) is session:
                log.debug("UDP session to {dest} ended", dest=destination)
                del self.sessions[destination]

        try:
            session.packets = self.tunnels.openPackets(
                destination, onPacket, onClose, inbound_tag=self.inbound_tag,
                source=self.source, email=self.email, idle_timeout=self.idle_timeout)
        except Exception as e:  # noqa: BLE001 - no outbound: drop, say why once
            log.info("UDP to {dest} from {source}: {why}", dest=destination,
                     source=self.source, why=e)
            return None
        if not session.packets.closed:
            self.sessions[destination] = session
        return session

    # -- towards the client --------------------------------------------------------
    def _reply(self, session: _Session, data: bytes) -> None:
        if self.closed or self.client_addr is None or self.port is None:
            return
        try:
            self.port.write(session.header + data, self.client_addr)
        except OSError as e:
            log.debug("UDP to client {addr} failed: {e}", addr=self.client_addr, e=e)

    # -- ending --------------------------------------------------------------------
    def close(self) -> None:
        """End the association: close every session, the timers and the socket."""
        if self.closed:
            return
        self.closed = True
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for session in sessions:
            session.packets.close()  # type: ignore[union-attr]
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()
