"""Trojan inbound: many passwords on one port; after the request, a tunnel or packet tunnels.

The first bytes decide (:class:`~vtwist.proxy.trojan.codec.RequestReader`). A known user's
TCP request hands the connection itself to the tunnel service (after the header the stream is
the payload as it is); a UDP request goes to a
:class:`~vtwist.proxy.trojan.server_udp.TrojanPacketSide`. Anything else (a browser, a
prober, a wrong password) is never answered by Trojan: it goes to a fallback with the bytes
already read when the inbound has ``fallbacks`` (as 4.34 does), and is otherwise held by the
probe guard (read, discarded, closed with a FIN after a random delay), so a prober learns
nothing from its bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.fallback.choose import choose_fallback
from vtwist.proxy.fallback.handoff import FallbackLink, hand_off, negotiated_alpn
from vtwist.proxy.fallback.settings import Fallback
from vtwist.proxy.guard import GuardedServerProtocol, ProbeGuard, SilentReply
from vtwist.proxy.trojan.codec import CMD_UDP, Accepted, Malformed, NotTrojan, RequestReader
from vtwist.proxy.trojan.server_udp import TrojanPacketSide
from vtwist.sansio import NEED_DATA, Clock
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.service import TunnelService

if TYPE_CHECKING:
    from vtwist.proxy.trojan.settings import TrojanInboundSettings, TrojanUser

__all__ = ["TrojanServerFactory", "TrojanServerProtocol"]

log = Logger(namespace="vtwist.trojan.inbound")


class Phase(Enum):
    """Where one Trojan connection is."""

    HANDSHAKE = "handshake"
    PROBE = "probe"
    FALLBACK = "fallback"
    STREAM = "stream"
    PACKETS = "packets"
    DONE = "done"


@implementer(IHalfCloseableProtocol)
class TrojanServerProtocol(GuardedServerProtocol):
    """One inbound Trojan connection."""

    protocolName = "trojan"

    def __init__(self, factory: TrojanServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HANDSHAKE
        self.reader: RequestReader | None = None
        #: the StreamTunnel or TrojanPacketSide after a valid request
        self.side: Any = None
        #: the fallback hand-off (it receives the rest of the client's bytes)
        self.fallback: FallbackLink | None = None
        self._timer: IDelayedCall | None = None

    @property
    def reactor(self) -> Any:
        """The factory's reactor (a Clock in tests)."""
        return self.factory.reactor

    def connectionMade(self) -> None:
        """Start the handshake deadline."""
        self.reader = RequestReader(self.factory.keys)
        self.startHandshakeTimer(self.factory.policy.level(0).handshake)

    def handshakeTimedOut(self) -> None:
        """No complete request in time: not Trojan."""
        self._timer = None
        if self.phase is Phase.HANDSHAKE:
            self.notTrojan("no complete request within the handshake timeout")

    # -- input -----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """The request first; then the payload to the tunnel (or the fallback, or nowhere)."""
        phase = self.phase
        if phase is Phase.STREAM or phase is Phase.PACKETS:
            self.side.received(data)
        elif phase is Phase.HANDSHAKE:
            result = self.reader.feed(data)  # type: ignore[union-attr]
            if result is NEED_DATA:
                return
            if isinstance(result, Accepted):
                self.reader = None
                self._accept(result)
            elif isinstance(result, NotTrojan):
                self.notTrojan(result.reason)
            elif isinstance(result, Malformed):
                self.reader = None
                self._refuse(f"bad request: {result.reason}")
        elif phase is Phase.FALLBACK and self.fallback is not None:
            self.fallback.received(data)
        elif self.hold is not None:
            self.hold.discard(data)

    def _accept(self, r: Accepted) -> None:
        self.handshakeDone()
        f = self.factory
        user: TrojanUser = r.user  # type: ignore[assignment]
        policy = f.policy.level(user.level)
        email = user.email or None
        if r.command == CMD_UDP:
            f.accepted["udp"] += 1
            self.phase = Phase.PACKETS
            self.side = TrojanPacketSide(f.tunnels, self.transport, policy, self._close,
                                         inbound_tag=f.tag, source=self._peer(), email=email)
        else:
            f.accepted["tcp"] += 1
            self.phase = Phase.STREAM
            self.side = f.tunnels.openStream(
                self.transport, r.destination, SilentReply(self.transport.loseConnection), inbound_tag=f.tag,
                source=self._peer(), email=email, policy=policy, sniff=f.sniffing)
        if r.leftover and self.side is not None:
            self.side.received(r.leftover)

    # -- refusals ----------------------------------------------------------------------------
    def notTrojan(self, reason: str) -> None:
        """Not a valid Trojan request (wrong password, a browser, a prober): one access line,
        then a fallback if the inbound has one for these bytes, else the probe guard."""
        f = self.factory
        first = self.reader.buffered if self.reader is not None else b""
        self.reader = None
        self.rejectClient(reason)
        if f.fallbacks:
            fallback = choose_fallback(f.fallbacks, negotiated_alpn(self.transport), first)
            if fallback is not None:
                self._fallBack(fallback, first)
                return
            log.info("trojan from {peer}: no fallback matches", peer=self._peer())
        self._hold()

    def _fallBack(self, fallback: Fallback, first: bytes) -> None:
        self.phase = Phase.FALLBACK
        self.fallback = hand_off(self.transport, fallback, first, self.reactor,
                                 self.factory.policy.level(0), self.factory.tunnels,
                                 self.factory.tag)

    def _refuse(self, reason: str) -> None:
        """A known key with a broken request: one access line, then the probe guard."""
        self.rejectClient(reason)
        self._hold()

    def _hold(self) -> None:
        self.phase = Phase.PROBE
        self.holdConnection(self.factory.guard)

    # -- ending ------------------------------------------------------------------------------
    def _close(self) -> None:
        if self.phase is Phase.DONE:
            return
        self.phase = Phase.DONE
        self._cancelTimer()
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed TCP: the end of its uplink."""
        phase = self.phase
        if phase is Phase.STREAM or phase is Phase.PACKETS:
            self.side.eof()
        elif phase is Phase.FALLBACK and self.fallback is not None:
            self.fallback.eof()
        elif phase is Phase.HANDSHAKE:
            # A request cut short: what a prober sends; it is answered like any other.
            self.notTrojan("connection half-closed before a complete request")
        elif phase is not Phase.PROBE:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our FIN went out (probe mode)."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Release everything this connection held."""
        phase, self.phase = self.phase, Phase.DONE
        self._cancelTimer()
        self.releaseHold()
        if self.side is not None:
            side, self.side = self.side, None
            side.lost(reason)
        if phase is Phase.FALLBACK and self.fallback is not None:
            fallback, self.fallback = self.fallback, None
            fallback.lost(reason)


class TrojanServerFactory(InboundFactory):
    """Builds :class:`TrojanServerProtocol`; one per inbound (all its ports share it)."""

    protocol = TrojanServerProtocol  # type: ignore[assignment]

    def __init__(self, settings: TrojanInboundSettings, tunnels: TunnelService,
                 policy: Policy = DEFAULT_POLICY, tag: str = "",
                 guard: ProbeGuard | None = None, now: Clock | None = None) -> None:
        super().__init__(tunnels, tag)
        self.settings = settings
        self.policy = policy
        self.now = now or time.time
        #: user by the 56 hex digits of its password's SHA-224
        self.keys: dict[bytes, object] = {u.key: u for u in settings.clients}
        self.fallbacks = list(settings.fallbacks)
        self.guard = guard or ProbeGuard()
        self.refused = 0
        #: accepted requests by network
        self.accepted: Counter[str] = Counter()

    @property
    def protocols(self) -> set[TrojanServerProtocol]:
        """The live connections."""
        return set(self.connections)  # type: ignore[arg-type]
