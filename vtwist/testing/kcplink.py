"""A simulated lossy datagram link between two sans-IO mKCP sessions.

Time is virtual: an event loop advances a fake clock to the next delivery or
session timer.  Loss, delay, jitter (reordering) and duplication are drawn from
a seeded RNG, so every run is reproducible.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from vtwist.transport.kcp.session import Session, State


@dataclass
class LinkProfile:
    """Impairments of one direction of the simulated link."""

    loss: float = 0.0
    delay: float = 0.005
    jitter: float = 0.0
    duplicate: float = 0.0


@dataclass
class LinkStats:
    """Per-direction counters."""

    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0
    bytes: int = 0


@dataclass
class SimulatedPair:
    """Two sessions joined by an impaired link under a virtual clock."""

    a: Session
    b: Session
    a_to_b: LinkProfile = field(default_factory=LinkProfile)
    b_to_a: LinkProfile = field(default_factory=LinkProfile)
    seed: int = 1
    now: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, Session, bytes]] = []
        self._seq = 0
        self.stats = {"a->b": LinkStats(), "b->a": LinkStats()}
        self.received = {id(self.a): bytearray(), id(self.b): bytearray()}
        self.read_enabled = {id(self.a): True, id(self.b): True}

    def _emit(self, src: Session) -> None:
        if src is self.a:
            dst, prof, st = self.b, self.a_to_b, self.stats["a->b"]
        else:
            dst, prof, st = self.a, self.b_to_a, self.stats["b->a"]
        for d in src.datagrams_to_send(self.now):
            st.sent += 1
            st.bytes += len(d)
            if self.rng.random() < prof.loss:
                st.dropped += 1
                continue
            copies = 1
            if self.rng.random() < prof.duplicate:
                copies = 2
                st.duplicated += 1
            for _ in range(copies):
                t = self.now + prof.delay + self.rng.random() * prof.jitter
                self._seq += 1
                heapq.heappush(self._queue, (t, self._seq, dst, d))

    def pump(self, s: Session) -> None:
        """Deliver readable data of ``s`` into ``received`` and emit its output."""
        if self.read_enabled[id(s)]:
            for chunk in s.read():
                self.received[id(s)] += chunk
        self._emit(s)

    def step(self, until: float) -> bool:
        """Advance to the next event (not past ``until``); False when idle."""
        times = [t for t in (self.a.next_timer(), self.b.next_timer()) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times:
            return False
        t = min(times)
        if t > until:
            self.now = until
            return False
        self.now = max(self.now, t)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, d = heapq.heappop(self._queue)
            st = self.stats["a->b" if dst is self.b else "b->a"]
            st.delivered += 1
            dst.receive_datagram(d, self.now)
            self.pump(dst)
        for s in (self.a, self.b):
            nt = s.next_timer()
            if nt is not None and nt <= self.now:
                s.handle_timer(self.now)
                self.pump(s)
        return True

    def run_until(self, predicate, limit: float, max_steps: int = 5_000_000) -> bool:
        """Step until ``predicate()`` holds or virtual time passes ``limit``."""
        steps = 0
        while not predicate():
            if self.now >= limit or steps >= max_steps:
                return False
            if not self.step(limit):
                # past the limit, or idle (both Terminated, nothing in flight): no event left
                return predicate()
            steps += 1
        return True

    def both_terminated(self) -> bool:
        """True when both sessions reached Terminated."""
        return self.a.state == State.TERMINATED and self.b.state == State.TERMINATED
