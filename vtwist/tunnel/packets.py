"""The UDP twin of the stream tunnel: one bounded queue, one association timer.

:class:`PacketQueue` is the one bounded queue for datagrams that wait for something (the
routing decision here; a VMess connection or a name lookup in the outbounds).
:class:`PacketTunnel` is one UDP session from an inbound: it keeps datagrams while the
dispatcher decides, opens the outbound's packet session, and closes after a whole idle
period with no datagram either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.tunnel.activity import ActivityTimer

log = Logger(namespace="vtwist.dispatch")

#: Datagrams one queue keeps while it waits; later ones are dropped (UDP may lose packets).
MAX_QUEUED = 64


class PacketQueue:
    """Datagrams waiting for something, at most ``limit``; the rest are dropped and counted."""

    __slots__ = ("items", "limit", "dropped")

    def __init__(self, limit: int = MAX_QUEUED) -> None:
        self.items: list[Any] = []
        self.limit = limit
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: Any) -> None:
        """Keep ``item`` if there is room."""
        if len(self.items) < self.limit:
            self.items.append(item)
        else:
            self.dropped += 1

    def take(self) -> list[Any]:
        """Everything kept, oldest first; the queue is empty afterwards."""
        items, self.items = self.items, []
        return items


@implementer(IPacketSession)
class PacketTunnel:
    """One UDP session from an inbound to the outbound the dispatcher picks.

    ``onPacket(data, source)`` gets the replies; ``onClose()`` is called once when the
    session ends on its own (no outbound, the outbound's session ended, or idle), never
    after :meth:`close`. With ``idle_timeout`` the session closes after between T and 2T
    without a datagram either way.
    """

    def __init__(self, clock: IReactorTime, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None], idle_timeout: float | None = None) -> None:
        self.onPacket = onPacket
        self.onClose = onClose
        self.queue: PacketQueue | None = PacketQueue()
        self.session: IPacketSession | None = None
        self.deciding: Deferred[Any] | None = None
        self.closed = False
        self.activity = ActivityTimer(clock, idle_timeout, self._idle) \
            if idle_timeout is not None else None
        #: payload bytes sent, received (the tunnel service's traffic counters read these)
        self.bytes = [0, 0]
        #: called once when the session ends, however (the tunnel service's close line)
        self.onFinish: Callable[[], None] | None = None

    def send(self, data: bytes, destination: Destination) -> None:
        """Send now, or queue until the outbound is known."""
        if self.closed:
            return
        if self.activity is not None:
            self.activity.active = True
        self.bytes[0] += len(data)
        if self.session is not None:
            self.session.send(data, destination)
        else:
            self.queue.push((data, destination))  # type: ignore[union-attr]

    def setIdleTimeout(self, timeout: float) -> None:
        """Start a new idle period of ``timeout`` (e.g. downlinkOnly after the uplink ends)."""
        if self.activity is not None:
            self.activity.reset(timeout)

    # -- from the tunnel service ------------------------------------------------------
    def open(self, outbound: IOutbound) -> None:
        """The outbound is known: open its session and send what waited."""
        self.deciding = None
        if self.closed:
            return
        self.session = outbound.packetSession(self._reply, self._ended)
        queue, self.queue = self.queue, None
        for data, destination in queue.take():  # type: ignore[union-attr]
            if self.closed:
                break
            self.session.send(data, destination)

    def fail(self, why: str) -> None:
        """No outbound: the session ends on its own."""
        self.deciding = None
        self._ended()

    # -- replies and ending -----------------------------------------------------------
    def _reply(self, data: bytes, source: Destination) -> None:
        if self.closed:
            return
        if self.activity is not None:
            self.activity.active = True
        self.bytes[1] += len(data)
        self.onPacket(data, source)

    def _ended(self) -> None:
        if self.closed:
            return
        self._free()
        self.onClose()

    def _idle(self) -> None:
        if self.closed:
            return
        session = self.session
        self._free()
        if session is not None:
            session.close()
        self.onClose()

    def _free(self) -> None:
        self.closed = True
        self.queue = None
        if self.activity is not None:
            self.activity.cancel()
            self.activity = None
        if self.onFinish is not None:
            finish, self.onFinish = self.onFinish, None
            finish()

    def close(self) -> None:
        """End the session, whether or not its outbound is known yet."""
        if self.closed:
            return
        self._free()
        if self.session is not None:
            self.session.close()
        elif self.deciding is not None:
            deciding, self.deciding = self.deciding, None
            deciding.cancel()
