"""Join two stream transports: push producers both ways, half-close, idle timeouts.

A :class:`Relay` owns two transports, side 0 (inbound, client-facing) and side 1 (outbound,
target-facing). Each transport is registered as the streaming producer of the other, so a slow
reader on one side pauses reading on the other and memory stays bounded. The protocols that
own the transports report their events to the relay: :meth:`Relay.received`,
:meth:`Relay.eof` (a half-close: the other side gets ``loseWriteConnection`` and the other
direction keeps flowing) and :meth:`Relay.lost`.

:class:`RelayProtocol` is the ready-made protocol for the outbound side; it buffers (and pauses)
whatever arrives before it is attached to a relay. Inbound protocols such as the SOCKS server
call the same three methods with side 0 once their handshake is done.

Timeouts follow V2Ray's policy: ``connIdle`` while both directions are open, ``downlinkOnly``
after the uplink finished, ``uplinkOnly`` after the downlink finished. Like V2Ray's activity
timer, a timeout of T closes after between T and 2T of silence, with no per-chunk timer work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.policy import DEFAULT_LEVEL, LevelPolicy

INBOUND = 0
OUTBOUND = 1

#: A relayed socket pauses its source only past this many buffered bytes. Twisted's default
#: high-water mark equals one 64 KiB read, so nearly every read would pause and resume the
#: other side (epoll churn); reads stay 64 KiB.
WRITE_HIGH_WATER = 256 * 1024

log = Logger(namespace="vtwist.relay")


class Relay:
    """Two transports joined as producers and consumers of each other."""

    def __init__(self, inbound: Any, outbound: Any, clock: IReactorTime,
                 policy: LevelPolicy = DEFAULT_LEVEL,
                 onFinish: Callable[[], None] | None = None) -> None:
        self.transports = (inbound, outbound)
        self.clock = clock
        self.policy = policy
        self.onFinish = onFinish
        self.eofs = [False, False]
        self.finished = False
        self.bytes = [0, 0]  # bytes received from each side
        self._active = False
        self._timer: IDelayedCall | None = None
        self._timeout = policy.conn_idle
        for transport in self.transports:
            raise_write_high_water(transport)
        outbound.registerProducer(inbound, True)
        inbound.registerProducer(outbound, True)
        self._arm(self._timeout)

    # -- events from the protocols ------------------------------------------------
    def received(self, side: int, data: bytes) -> None:
        """Data arrived on ``side``: forward it to the other transport."""
        if self.finished:
            return
        self._active = True
        self.bytes[side] += len(data)
        self.transports[1 - side].write(data)

    def receivedSequence(self, side: int, chunks: list[Any]) -> None:
        """Several pieces arrived on ``side`` at once: forward them in one write."""
        if self.finished:
            return
        self._active = True
        self.bytes[side] += sum(len(c) for c in chunks)
        self.transports[1 - side].writeSequence(chunks)

    def eof(self, side: int) -> None:
        """``side`` will send no more: half-close the other side's write direction."""
        if self.finished or self.eofs[side]:
            return
        self.eofs[side] = True
        other = self.transports[1 - side]
        half_close = getattr(other, "loseWriteConnection", None)
        if half_close is not None:
            half_close()  # e.g. VMess sends its end-of-stream chunk, TCP a FIN
        if all(self.eofs):
            self.finish()
            return
        # After the uplink (side 0) ends only the downlink may go on, and vice versa.
        self._timeout = self.policy.downlink_only if side == INBOUND else self.policy.uplink_only
        self._active = False
        self._arm(self._timeout)

    def lost(self, side: int, reason: Failure | None = None) -> None:
        """``side``'s connection is gone: close the other one (after its buffer drains)."""
        self.finish()

    # -- ending --------------------------------------------------------------------
    def finish(self) -> None:
        """Close both transports gracefully (each flushes what it buffered)."""
        if self.finished:
            return
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for transport in self.transports:
            try:
                transport.unregisterProducer()
            except Exception:  # noqa: BLE001 - a transport already gone may refuse
                pass
            transport.loseConnection()
        if self.onFinish is not None:
            callback, self.onFinish = self.onFinish, None
            callback()

    def _arm(self, timeout: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(timeout, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.finished:
            return
        if self._active:
            self._active = False
            self._arm(self._timeout)
            return
        log.debug("relay idle for {timeout}s, closing", timeout=self._timeout)
        self.finish()


def raise_write_high_water(transport: Any, limit: int = WRITE_HIGH_WATER) -> None:
    """Let the socket under ``transport`` (through any wrapping layers) buffer ``limit`` bytes
    before it pauses its producer. Reads keep their size."""
    for _ in range(8):
        if isinstance(transport, Connection):
            def full(t: Connection = transport) -> bool:
                return len(t.dataBuffer) + t._tempDataLen > limit

            transport._isSendBufferFull = full  # type: ignore[method-assign]
            return
        transport = getattr(transport, "lowerTransport", None) or getattr(
            transport, "transport", None)
        if transport is None:
            return


@implementer(IHalfCloseableProtocol)
class RelayProtocol(Protocol):
    """The outbound side of a relay; until :meth:`attach` it pauses and keeps what arrives."""

    relay: Relay | None = None
    side: int = OUTBOUND

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._pendingEOF = False
        self._pendingLost: Failure | None = None

    def attach(self, relay: Relay, side: int = OUTBOUND) -> None:
        """Start forwarding into ``relay`` as ``side``, replaying anything held back."""
        self.relay = relay
        self.side = side
        # Resume before replaying: the replayed write may legitimately pause us again, and
        # resuming afterwards would undo that. Transports deliver resumed reads later, on
        # the reactor, so the replayed bytes still come first.
        if (self._pendingLost is None and not self._pendingEOF
                and self.transport is not None):
            self.transport.resumeProducing()
        pending, self._pending = self._pending, []
        if pending:
            relay.receivedSequence(side, pending)
        if self._pendingLost is not None:
            relay.lost(side, self._pendingLost)
        elif self._pendingEOF:
            relay.eof(side)

    def connectionMade(self) -> None:
        """Hold the data until attached (the inbound may still be replying)."""
        if self.relay is None:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        """Forward, or keep until attached."""
        if self.relay is not None:
            self.relay.received(self.side, data)
        else:
            self._pending.append(data)

    def readConnectionLost(self) -> None:
        """The peer half-closed."""
        if self.relay is not None:
            self.relay.eof(self.side)
        else:
            self._pendingEOF = True

    def writeConnectionLost(self) -> None:
        """Our write side is closed; nothing to do."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The connection is gone."""
        if self.relay is not None:
            self.relay.lost(self.side, reason)
        else:
            self._pendingLost = reason


class RelayProtocolFactory(Factory):
    """Builds :class:`RelayProtocol` for an outbound connection."""

    protocol = RelayProtocol
    noisy = False
