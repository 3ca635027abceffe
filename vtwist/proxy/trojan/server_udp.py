"""The Trojan server's UDP side: one accepted UDP request (command 3) as packet tunnels.

Each framed datagram names its own destination (the request's address only says "UDP", as
in 4.34); datagrams to one destination share a packet tunnel, routed once. Replies go back
framed with the destination they came from. Tunnels close after ``connIdle`` without a
datagram; once the client ended its uplink, after ``downlinkOnly``, and the connection
closes when the last one has.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.address import Destination
from vtwist.policy import LevelPolicy
from vtwist.proxy.trojan.codec import PacketDecoder, TrojanError, encode_packet
from vtwist.tunnel.service import TunnelService

log = Logger(namespace="vtwist.trojan.inbound")

#: At most this many destinations at once per Trojan connection (the oldest goes first).
MAX_SESSIONS = 256


class TrojanPacketSide:
    """Datagrams between one Trojan UDP connection and the packet tunnels it opened."""

    def __init__(self, tunnels: TunnelService, transport: Any, policy: LevelPolicy,
                 onClose: Callable[[], None], *, inbound_tag: str = "", source: str = "",
                 email: str | None = None) -> None:
        self.tunnels = tunnels
        self.transport = transport
        self.policy = policy
        self.onClose = onClose
        self.inbound_tag = inbound_tag
        self.source = source
        self.email = email
        self.decoder = PacketDecoder()
        self.sessions: OrderedDict[Destination, Any] = OrderedDict()
        self.uplinkDone = False
        self.closed = False

    def received(self, data: bytes) -> None:
        """Framed datagrams from the client."""
        if self.closed:
            return
        try:
            packets = self.decoder.feed(data)
        except TrojanError as e:
            log.info("trojan UDP from {source}: {why}; closing", source=self.source, why=e)
            self.close()
            return
        for packet in packets:
            if self.closed:
                return
            self._send(packet.payload, packet.destination)

    def _send(self, payload: bytes, destination: Destination) -> None:
        tunnel = self.sessions.get(destination)
        if tunnel is None:
            tunnel = self._open(destination)
            if tunnel is None:
                return
        else:
            self.sessions.move_to_end(destination)
        tunnel.send(payload, destination)

    def _open(self, destination: Destination) -> Any:
        while len(self.sessions) >= MAX_SESSIONS:
            _, oldest = self.sessions.popitem(last=False)
            oldest.close()
        frame_for = destination

        def onPacket(data: bytes, source: Destination) -> None:
            if not self.closed:
                self.transport.write(encode_packet(frame_for, data))

        def onClose() -> None:
            if self.sessions.get(destination) is tunnel:
                del self.sessions[destination]
            if self.uplinkDone and not self.sessions:
                self.close()

        try:
            tunnel = self.tunnels.openPackets(
                destination, onPacket, onClose, inbound_tag=self.inbound_tag,
                source=self.source, email=self.email, idle_timeout=self.policy.conn_idle,
                policy=self.policy)
        except Exception as e:  # noqa: BLE001 - no outbound: drop, say why
            log.info("trojan UDP to {dest} from {source}: {why}", dest=destination,
                     source=self.source, why=e)
            return None
        if not tunnel.closed:
            self.sessions[destination] = tunnel
        return tunnel

    def eof(self) -> None:
        """The client ended its uplink: replies may follow for ``downlinkOnly``."""
        if self.uplinkDone:
            return
        self.uplinkDone = True
        if not self.sessions:
            self.close()
            return
        for tunnel in list(self.sessions.values()):
            tunnel.setIdleTimeout(self.policy.downlink_only)

    def lost(self, reason: Failure | None = None) -> None:
        """The Trojan connection is gone: close every tunnel."""
        self.closed = True
        self._closeSessions()

    def _closeSessions(self) -> None:
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for tunnel in sessions:
            tunnel.close()

    def close(self) -> None:
        """End the session and the connection."""
        if self.closed:
            return
        self.closed = True
        self._closeSessions()
        self.onClose()
