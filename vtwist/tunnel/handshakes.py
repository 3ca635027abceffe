"""A cap on an inbound's connections still in their handshake (vtwist's own).

Idle or slowloris connections each hold a socket, a protocol and a timer until the handshake
deadline. Past ``limit`` of them the oldest is shed (closed with a FIN, no answer), so a flood
costs bounded memory and the newest connections, a real client's among them, go on.
``policy.system.maxHandshakes`` sets the limit (0: none).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from vtwist.policy import DEFAULT_MAX_HANDSHAKES

__all__ = ["DEFAULT_MAX_HANDSHAKES", "HandshakeLimit", "handshakes_of"]
#: at most one "shedding" log line per this many seconds
LOG_INTERVAL = 10.0

log = Logger(namespace="vtwist.tunnel.handshakes")


class HandshakeLimit:
    """The connections of one inbound that are in their handshake, oldest first."""

    def __init__(self, limit: int = DEFAULT_MAX_HANDSHAKES, clock: Any = None,
                 name: str = "") -> None:
        self.limit = limit
        self.clock = clock
        self.name = name
        #: connections shed so far
        self.shed = 0
        self._open: dict[int, Any] = {}  # insertion order: oldest first
        self._logged_at: float | None = None
        self._unlogged = 0

    def __len__(self) -> int:
        return len(self._open)

    def enter(self, protocol: Any) -> None:
        """``protocol`` starts (or restarts) a handshake; the oldest beyond the cap are shed."""
        key = id(protocol)
        self._open.pop(key, None)
        self._open[key] = protocol
        while self.limit > 0 and len(self._open) > self.limit:
            oldest = self._open.pop(next(iter(self._open)))
            self._shed(oldest)

    def leave(self, protocol: Any) -> None:
        """``protocol``'s handshake ended (done, refused, or the connection is gone)."""
        self._open.pop(id(protocol), None)

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
