"""UDP ASSOCIATE: one UDP socket per association, relayed through the dispatcher.

The socket is bound on the inbound's listen address (port chosen by the system). Datagrams are
accepted only from the IP of the TCP control connection's client; fragmented ones (FRAG != 0)
are dropped. Each destination gets its own packet session from the dispatcher (so routing can
pick an outbound per destination, as V2Ray does); a session with no traffic either way for
``idle_timeout`` (closing after between T and 2T, like the relay) is closed, and the next packet
opens a new one. The association itself ends with its TCP control connection
(:meth:`UDPAssociation.close`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vtwist.address import Destination, normalize_host
from vtwist.proxy.socks.codec import ProtocolError, build_datagram, parse_datagram

log = Logger(namespace="vtwist.socks")

#: Seconds without a packet either way before a destination's session closes.
UDP_IDLE_TIMEOUT = 60.0
#: Open destination sessions per association; the least recently used is closed beyond it.
MAX_SESSIONS = 256
MAX_DATAGRAM = 65535


class _Session:
    """The packet session for one destination, with its idle timer and reply header."""

    __slots__ = ("destination", "header", "packets", "active", "timer")

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        #: Replies are "from" the destination the client named: one header per session.
        self.header = build_datagram(destination.host, destination.port, b"")
        self.packets: Any = None
        self.active = False
        self.timer: IDelayedCall | None = None


class UDPAssociation(DatagramProtocol):
    """The UDP side of one SOCKS5 UDP ASSOCIATE."""

    def __init__(self, reactor: Any, dispatcher: Any, client_host: str, *,
                 inbound_tag: str = "", source: str = "", email: str | None = None,
                 idle_timeout: float = UDP_IDLE_TIMEOUT, max_sessions: int = MAX_SESSIONS) -> None:
        self.reactor = reactor
        self.dispatcher = dispatcher
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
        session.active = True
        session.packets.send(datagram.payload, destination)

    def _open(self, destination: Destination) -> _Session | None:
        while len(self.sessions) >= self.max_sessions:
            _, oldest = self.sessions.popitem(last=False)
            self._closeSession(oldest)
        session = _Session(destination)

        def onPacket(data: bytes, source: Destination) -> None:
            self._reply(session, data)

        def onClose() -> None:
            if self.sessions.get(destination) is session:
                del self.sessions[destination]
                self._closeSession(session, close_packets=False)

        try:
            session.packets = self.dispatcher.packetSession(
                destination, onPacket, onClose, inbound_tag=self.inbound_tag,
                source=self.source, email=self.email)
        except Exception as e:  # noqa: BLE001 - no outbound: drop, say why once
            log.info("UDP to {dest} from {source}: {why}", dest=destination,
                     source=self.source, why=e)
            return None
        self.sessions[destination] = session
        session.timer = self.reactor.callLater(self.idle_timeout, self._check, session)
        return session

    # -- towards the client --------------------------------------------------------
    def _reply(self, session: _Session, data: bytes) -> None:
        if self.closed or self.client_addr is None or self.port is None:
            return
        session.active = True
        try:
            self.port.write(session.header + data, self.client_addr)
        except OSError as e:
            log.debug("UDP to client {addr} failed: {e}", addr=self.client_addr, e=e)

    # -- timers and ending ---------------------------------------------------------
    def _check(self, session: _Session) -> None:
        session.timer = None
        if self.closed or self.sessions.get(session.destination) is not session:
            return
        if session.active:
            session.active = False
            session.timer = self.reactor.callLater(self.idle_timeout, self._check, session)
            return
        log.debug("UDP session to {dest} idle, closing", dest=session.destination)
        del self.sessions[session.destination]
        self._closeSession(session)

    def _closeSession(self, session: _Session, close_packets: bool = True) -> None:
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        if close_packets and session.packets is not None:
            session.packets.close()

    def close(self) -> None:
        """End the association: close every session, the timers and the socket."""
        if self.closed:
            return
        self.closed = True
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for session in sessions:
            self._closeSession(session)
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()
