"""The VMess server's UDP side: one accepted VMess UDP connection (command 2) as a packet tunnel.

Each body chunk is one datagram to the request's destination; each reply is one chunk back.
The tunnel closes after ``connIdle`` without a datagram either way, and after ``downlinkOnly``
once the client ended its uplink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from vtwist.address import Destination
from vtwist.policy import LevelPolicy
from vtwist.tunnel.packets import PacketTunnel
from vtwist.tunnel.service import TunnelService


class VMessPacketSide:
    """Datagrams between a VMess UDP connection's decoded body and a packet tunnel."""

    def __init__(self, tunnels: TunnelService, inner: Any, destination: Destination,
                 policy: LevelPolicy, onClose: Callable[[], None], *, inbound_tag: str = "",
                 source: str = "", email: str | None = None) -> None:
        self.inner = inner
        self.destination = destination
        self.policy = policy
        self.uplinkDone = False
        self.tunnel: PacketTunnel = tunnels.openPackets(
            destination, self._reply, onClose, inbound_tag=inbound_tag, source=source,
            email=email, idle_timeout=policy.conn_idle, policy=policy)

    def receivedSequence(self, payloads: list[Any]) -> None:
        """Decoded chunks from the client: one datagram each."""
        send, dest = self.tunnel.send, self.destination
        for payload in payloads:
            send(bytes(payload), dest)

    def eof(self) -> None:
        """The client ended its uplink: only replies may follow, for ``downlinkOnly``."""
        if not self.uplinkDone:
            self.uplinkDone = True
            self.tunnel.setIdleTimeout(self.policy.downlink_only)

    def _reply(self, data: bytes, source: Destination) -> None:
        self.inner.write(data)

    def lost(self, reason: Failure | None = None) -> None:
        """The VMess connection is gone."""
        self.tunnel.close()

    def close(self) -> None:
        """End the session."""
        self.tunnel.close()
