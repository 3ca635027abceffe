"""Join two stream transports: push producers both ways, half-close, policy timers.

A :class:`Relay` owns two transports, side 0 (inbound, client-facing) and side 1 (outbound,
target-facing). Each transport is registered as the streaming producer of the other, so a slow
reader on one side pauses reading on the other and memory stays bounded. The protocols that
own the transports report their events to the relay: :meth:`Relay.received`,
:meth:`Relay.eof` (a half-close: the other side gets ``loseWriteConnection`` and the other
direction keeps flowing) and :meth:`Relay.lost`.

:class:`RelayProtocol` is the protocol of the outbound side; it pauses and holds whatever
arrives before it is attached to a relay. The tunnel service (:mod:`vtwist.tunnel.stream`)
builds relays; inbounds report their side's events to their tunnel.

Where both transports are plain TCP sockets, the relay moves onto a kernel-to-kernel splice
once their write buffers are empty (:mod:`vtwist.tunnel.splice`); the interface stays the same.

Timeouts follow V2Ray's policy: ``connIdle`` while both directions are open, ``downlinkOnly``
after the uplink finished, ``uplinkOnly`` after the downlink finished, with V2Ray's activity
timer (:mod:`vtwist.tunnel.activity`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.transport.internals import endpoint_protocol, raise_write_high_water
from vtwist.tunnel.activity import ActivityTimer
from vtwist.tunnel.held import HeldInput
from vtwist.tunnel.splice import offer_splice

if TYPE_CHECKING:
    from vtwist.tunnel.splice import Splicer, SpliceSwitch

INBOUND = 0
OUTBOUND = 1

log = Logger(namespace="vtwist.relay")


class Relay:
    """Two transports joined as producers and consumers of each other."""

    def __init__(self, inbound: Any, outbound: Any, clock: IReactorTime,
                 policy: LevelPolicy = DEFAULT_LEVEL,
                 onFinish: Callable[[], None] | None = None) -> None:
        self.transports = (inbound, outbound)
        self.policy = policy
        self.onFinish = onFinish
        self.eofs = [False, False]
        self.finished = False
        self.bytes = [0, 0]  # bytes received from each side
        #: the splicer once the bytes move by splice (before: the switch waiting to start it)
        self.splice: Splicer | SpliceSwitch | None = None
        for transport in self.transports:
            raise_write_high_water(transport)
        outbound.registerProducer(inbound, True)
        inbound.registerProducer(outbound, True)
        self.activity = ActivityTimer(clock, policy.conn_idle, self._idle)
        if isinstance(endpoint_protocol(getattr(outbound, "protocol", None)), RelayProtocol):
            offer_splice(self, clock)  # a plain TCP outbound: maybe kernel-to-kernel

    # -- events from the protocols ------------------------------------------------
    def received(self, side: int, data: bytes) -> None:
        """Data arrived on ``side``: forward it to the other transport."""
        if self.finished:
            return
        self.activity.active = True
        self.bytes[side] += len(data)
        self.transports[1 - side].write(data)

    def receivedSequence(self, side: int, chunks: list[Any]) -> None:
        """Several pieces arrived on ``side`` at once: forward them in one write."""
        if self.finished:
            return
        self.activity.active = True
        self.bytes[side] += sum(len(c) for c in chunks)
        self.transports[1 - side].writeSequence(chunks)

    def eof(self, side: int) -> None:
        """``side`` will send no more: half-close the other side's write direction."""
        if self.finished or self.eofs[side]:
            return
        self.eofs[side] = True
        other = self.transports[1 - side]
        if self.eofs[1 - side] and self.splice is None:
            # this ends both directions: the end mark and the close can go as one (a VMess
            # end chunk with the TLS close_notify: one write, one read at the peer)
            end_and_close = getattr(other, "endAndClose", None)
            if end_and_close is not None:
                other.unregisterProducer()  # (a close waits for its producer to go)
                end_and_close()
                self.finish()
                return
        half_close = getattr(other, "loseWriteConnection", None)
        if self.splice is not None and self.splice.running:
            pass  # the splicer shut the socket's write side itself
        elif half_close is not None:
            half_close()  # e.g. VMess sends its end-of-stream chunk, TCP a FIN
        if all(self.eofs):
            self.finish()
            return
        # After the uplink (side 0) ends only the downlink may go on, and vice versa.
        self.activity.reset(self.policy.downlink_only if side == INBOUND
                            else self.policy.uplink_only)

    def lost(self, side: int, reason: Failure | None = None) -> None:
        """``side``'s connection is gone: close the other one (after its buffer drains)."""
        self.finish()

    # -- ending --------------------------------------------------------------------
    def finish(self) -> None:
        """Close both transports gracefully (each flushes what it buffered)."""
        if self.finished:
            return
        self.finished = True
        self.activity.cancel()
        if self.splice is not None:
            self.splice.stop()
        for transport in self.transports:
            try:
                transport.unregisterProducer()
            except Exception:  # noqa: BLE001 - a transport already gone may refuse
                pass
            transport.loseConnection()
        if self.onFinish is not None:
            callback, self.onFinish = self.onFinish, None
            callback()

    def _idle(self) -> None:
        log.debug("relay idle for {timeout}s, closing", timeout=self.activity.timeout)
        self.finish()


@implementer(IHalfCloseableProtocol)
class RelayProtocol(Protocol):
    """The outbound side of a relay; until :meth:`attach` it pauses and holds what arrives."""

    relay: Relay | None = None
    side: int = OUTBOUND
    #: the tag of the outbound that connected it (set by the tunnel service)
    outbound_tag: str = ""

    def __init__(self) -> None:
        self.held: HeldInput | None = HeldInput()

    def attach(self, relay: Relay, side: int = OUTBOUND) -> None:
        """Start forwarding into ``relay`` as ``side``, replaying anything held back."""
        self.relay = relay
        self.side = side
        held, self.held = self.held, None
        if held is not None:
            held.replay(relay, side, held.pausedTransport(self.transport))

    def dataReceived(self, data: bytes) -> None:
        """Forward, or keep until attached (pausing: the inbound may still be replying)."""
        relay = self.relay
        if relay is not None:
            relay.received(self.side, data)
        else:
            self.held.hold([data], self.transport)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        """The peer half-closed."""
        if self.relay is not None:
            self.relay.eof(self.side)
        else:
            self.held.eof = True  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our write side is closed; nothing to do."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The connection is gone."""
        if self.relay is not None:
            self.relay.lost(self.side, reason)
        elif self.held is not None:
            self.held.connectionLost(reason)


class RelayProtocolFactory(Factory):
    """Builds :class:`RelayProtocol` for an outbound connection."""

    protocol = RelayProtocol
    noisy = False
