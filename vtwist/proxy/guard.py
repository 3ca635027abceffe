"""The probe guard every proxy server shares (VMess, Shadowsocks, VLESS, Trojan): refused
connections are held, never answered.

A bad header, a replay or a clock out of the window gets no byte back. The connection is
read and discarded, then closed after the handshake deadline plus a bounded random delay,
with a FIN (never a reset), so the timing tells a prober nothing about its bytes. How many
such connections are held at once is capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


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
