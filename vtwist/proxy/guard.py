"""The probe guard every proxy server shares (VMess, Shadowsocks, VLESS, Trojan): refused
connections are held, never answered.

A bad header, a replay or a clock out of the window gets no byte back. The connection is
read and discarded, then closed after the handshake deadline plus a bounded random delay,
with a FIN (never a reset), so the timing tells a prober nothing about its bytes. How many
such connections are held at once is capped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import format_address
from vtwist.interfaces import IInboundReply
from vtwist.tunnel.handshakes import handshakes_of, start_handshake


@dataclass
class ProbeGuard:
    """How refused connections are held: random close delay and a cap on how many."""

    min_delay: float = 2.0
    max_delay: float = 8.0
    linger: float = 10.0  # after our FIN, how long we keep reading before closing anyway
    max_held: int = 512
    held: int = 0
    rng: random.Random = field(default_factory=random.SystemRandom)

    def delay(self) -> float:
        """A close delay drawn uniformly from [min_delay, max_delay]."""
        return self.rng.uniform(self.min_delay, self.max_delay)

    def hold(self, transport: Any, clock: IReactorTime, deadline: float) -> ProbeHold | None:
        """Hold ``transport`` until ``deadline`` (its handshake deadline) plus a random delay;
        beyond the cap it is closed at once and None is returned."""
        if self.held >= self.max_held:
            transport.loseConnection()
            return None
        return ProbeHold(self, transport, clock, deadline)


class ProbeHold:
    """One refused connection: discard what arrives, FIN after the delay, close after linger."""

    def __init__(self, guard: ProbeGuard, transport: Any, clock: IReactorTime,
                 deadline: float) -> None:
        self.guard = guard
        self.transport = transport
        self.clock = clock
        self.discarded = 0
        guard.held += 1
        wait = max(0.0, deadline - clock.seconds()) + guard.delay()
        self._timer: IDelayedCall | None = clock.callLater(wait, self._fin)

    def discard(self, data: bytes) -> None:
        """Bytes from the prober: counted, dropped."""
        self.discarded += len(data)

    def _fin(self) -> None:
        self._timer = self.clock.callLater(self.guard.linger, self.transport.loseConnection)
        self.transport.loseWriteConnection()

    def release(self) -> None:
        """The connection is gone: stop the timers and free the slot."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
            self.guard.held -= 1


@implementer(IInboundReply)
class SilentReply:
    """The tunnel's reply for a server with no answer of its own to send (VMess, VLESS,
    Trojan, Shadowsocks: a response header, if any, rides the first downlink bytes); a
    failed connect calls ``close`` (the protocol's way of closing its client)."""

    wantsBound = False  # succeeded() ignores the outbound's address

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close

    def succeeded(self, bound: Any) -> None:
        """Nothing to send."""

    def failed(self, kind: Any, reason: Failure) -> None:
        """Close the client's connection."""
        self.close()


class GuardedServerProtocol(Protocol):
    """What every server that never answers a bad client shares: the handshake deadline
    started at ``connectionMade``, one access line per refusal, and the guard's hold.

    Subclasses set :attr:`protocolName` and call :meth:`startHandshakeTimer`,
    :meth:`rejectClient` and :meth:`holdConnection`; :meth:`handshakeTimedOut` is theirs.
    """

    #: the protocol's name in access lines (``from ... rejected vmess: ...``)
    protocolName = "proxy"
    factory: Any
    hold: ProbeHold | None = None
    _timer: IDelayedCall | None = None
    _start = 0.0
    _handshakeSeconds = 0.0

    @property
    def discarded(self) -> int:
        """Bytes read and dropped from a refused connection."""
        return self.hold.discarded if self.hold is not None else 0

    def _peer(self) -> str:
        return format_address(self.transport.getPeer())

    def startHandshakeTimer(self, seconds: float) -> None:
        """The client has ``seconds`` to complete its request (from now)."""
        reactor = self.factory.reactor
        self._start = reactor.seconds()
        self._handshakeSeconds = seconds
        self._timer = start_handshake(self.factory, self, seconds, self.handshakeTimedOut)

    def handshakeTimedOut(self) -> None:
        """The deadline passed (subclasses refuse, or fall back)."""

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        limit = handshakes_of(self.factory)
        if limit is not None:
            limit.leave(self)

    def handshakeDone(self) -> None:
        """The client's request is valid: stop the deadline, count how long it took."""
        self._cancelTimer()
        stats = getattr(self.factory.tunnels, "stats", None)
        if stats is not None and self._start:
            stats.handshake(self.protocolName, self.factory.reactor.seconds() - self._start)

    def rejectClient(self, reason: str) -> None:
        """One access line saying why, counted as refused."""
        self._cancelTimer()
        self.factory.tunnels.reject(self._peer(), self.protocolName, reason)
        self.factory.refused += 1

    def holdConnection(self, guard: ProbeGuard) -> None:
        """Never answer: discard input, FIN at start + handshake deadline + a random delay,
        whenever (and whether) a verdict was reached, so the timing tells a prober nothing."""
        self.hold = guard.hold(self.transport, self.factory.reactor,
                               self._start + self._handshakeSeconds)

    def releaseHold(self) -> None:
        """The connection is gone: free the guard's slot."""
        if self.hold is not None:
            hold, self.hold = self.hold, None
            hold.release()
