"""A cap on an inbound's connections still in their handshake (vtwist's own).

Idle or slowloris connections each hold a socket, a protocol and a timer until the handshake
deadline. Past ``limit`` of them the oldest is shed (closed with a FIN, no answer), so a flood
costs bounded memory and the newest connections, a real client's among them, go on.
``policy.system.maxHandshakes`` sets the limit (0: none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from vtwist.policy import DEFAULT_MAX_HANDSHAKES

__all__ = ["DEFAULT_MAX_HANDSHAKES", "HandshakeLimit", "handshakes_of", "start_handshake"]
#: at most one "shedding" log line per this many seconds
LOG_INTERVAL = 10.0

log = Logger(namespace="vtwist.tunnel.handshakes")


class HandshakeLimit:
    """The connections of one inbound that are in their handshake, oldest first, and their
    handshake deadlines.

    The deadlines share one timer (:meth:`enter` with ``seconds``): it is set for the
    soonest deadline and, when it fires, expires what is due and is set again for the next
    one. A connection whose handshake ends in time costs no timer of its own (a
    ``callLater`` and its cancel, each connection). Deadlines are kept in one queue per
    duration (the inbound's few: its protocol's and its WebSocket layer's), each in
    deadline order since the clock only moves on, so a firing looks only at what is due
    and at the head of each queue, however many connections wait (a slowloris flood)."""

    def __init__(self, limit: int = DEFAULT_MAX_HANDSHAKES, clock: Any = None,
                 name: str = "") -> None:
        self.limit = limit
        self.clock = clock
        self.name = name
        #: connections shed so far
        self.shed = 0
        #: id(protocol) -> [protocol, deadline, expired callback, seconds] (the last three
        #: None without a deadline), in the order the handshakes started
        self._open: dict[int, list[Any]] = {}
        #: seconds -> {id(protocol): the same entry}, each in deadline order
        self._queues: dict[float, dict[int, list[Any]]] = {}
        self._logged_at: float | None = None
        self._unlogged = 0
        self._timer: Any = None
        self._timerAt = 0.0

    def __len__(self) -> int:
        return len(self._open)

    def enter(self, protocol: Any, seconds: float | None = None,
              expired: Callable[[], Any] | None = None, clock: Any = None) -> bool:
        """``protocol`` starts (or restarts) a handshake; the oldest beyond the cap are shed.

        With ``seconds`` and ``expired``: ``expired()`` is called once ``seconds`` pass
        before :meth:`leave` (measured on ``clock``, which must be this limit's clock).
        Returns whether the limit keeps that deadline (False: the caller times it)."""
        key = id(protocol)
        self._forget(key)
        keeps = seconds is not None and expired is not None and clock is not None \
            and clock is self.clock
        if keeps:
            deadline = clock.seconds() + seconds  # type: ignore[operator]
            entry = [protocol, deadline, expired, seconds]
            self._open[key] = entry
            queue = self._queues.get(seconds)  # type: ignore[arg-type]
            if queue is None:
                queue = self._queues[seconds] = {}  # type: ignore[index]
            queue[key] = entry
            self._arm(deadline, seconds)  # type: ignore[arg-type]
        else:
            self._open[key] = [protocol, None, None, None]
        open_ = self._open
        while self.limit > 0 and len(open_) > self.limit:
            oldest = self._forget(next(iter(open_)))
            self._shed(oldest[0])  # type: ignore[index]
        return keeps

    def leave(self, protocol: Any) -> None:
        """``protocol``'s handshake ended (done, refused, or the connection is gone); the
        last one out stops the timer (an idle inbound holds none)."""
        if self._forget(id(protocol)) is not None and not self._open:
            timer, self._timer = self._timer, None
            if timer is not None and timer.active():
                timer.cancel()

    def _forget(self, key: int) -> list[Any] | None:
        """Drop ``key``'s entry (from its deadline queue too); the entry, or None."""
        entry = self._open.pop(key, None)
        if entry is not None and entry[3] is not None:
            self._queues[entry[3]].pop(key, None)
        return entry

    def _due(self) -> None:
        """The timer: expire every handshake past its deadline, set it for the next one."""
        self._timer = None
        now = self.clock.seconds()
        due = []
        for queue in self._queues.values():
            for key, entry in queue.items():
                if entry[1] > now:
                    break  # the rest of this queue is later
                due.append(key)
        for key in due:
            entry = self._forget(key)
            if entry is not None:
                entry[2]()  # (it may enter or leave other handshakes)
        heads = [next(iter(queue.values()))[1] for queue in self._queues.values() if queue]
        if heads:
            soonest = min(heads)
            self._arm(soonest, max(0.0, soonest - self.clock.seconds()))

    def _arm(self, deadline: float, seconds: float) -> None:
        """The timer fires by ``deadline`` (``seconds`` from now)."""
        if self._timer is None:
            self._timerAt = deadline
            self._timer = self.clock.callLater(seconds, self._due)
        elif deadline < self._timerAt:
            self._timerAt = deadline
            self._timer.reset(seconds)

    def _shed(self, protocol: Any) -> None:
        self.shed += 1
        self._unlogged += 1
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            # a FIN for TCP (an idle connection costs nothing once closed); transports whose
            # graceful close lingers (an mKCP session) are dropped at once
            if getattr(transport, "abortOnShed", False):
                transport.abortConnection()
            else:
                transport.loseConnection()
        now = self.clock.seconds() if self.clock is not None else None
        if now is None or self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
            log.warn("{name}: {n} connection(s) in handshake shed (more than {limit} at once; "
                     "policy.system.maxHandshakes)", name=self.name or "inbound",
                     n=self._unlogged, limit=self.limit)
            self._logged_at = now
            self._unlogged = 0


def handshakes_of(factory: Any) -> HandshakeLimit | None:
    """The :class:`HandshakeLimit` of an inbound's factory, if it has one."""
    return getattr(factory, "handshakes", None)


def start_handshake(factory: Any, protocol: Any, seconds: float,
                    expired: Callable[[], Any]) -> Any:
    """``protocol``'s handshake starts on ``factory``'s reactor: it counts against the
    inbound's limit (past the cap the oldest are shed), which keeps the deadline on its one
    timer; without a limit (or on another clock) a timer of its own. Returns that timer,
    or None when the limit keeps the deadline (:meth:`HandshakeLimit.leave` ends it)."""
    reactor = factory.reactor
    limit = handshakes_of(factory)
    if limit is not None and limit.enter(protocol, seconds, expired, reactor):
        return None
    return reactor.callLater(seconds, expired)
