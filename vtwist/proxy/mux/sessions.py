"""The session table of one Mux.Cool carrier, sans-IO: live ids, their network, id
allocation (client) and what was seen before (server), as V2Ray 4.34's session.go."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["MAX_SESSIONS", "SessionTable"]

V = TypeVar("V")

#: Sessions one carrier carries in its life, as 4.34's proxyman outbound (MaxConnection).
MAX_SESSIONS = 128


class SessionTable(Generic[V]):
    """Live sessions by id. ``udp`` is the set of live UDP ids (the decoder's limit)."""

    def __init__(self) -> None:
        self.live: dict[int, V] = {}
        self.udp: set[int] = set()
        #: ids allocated so far (client), or the highest id announced (server)
        self.allocated = 0
        self.highest = -1

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, sid: object) -> bool:
        return sid in self.live

    def __iter__(self) -> Iterator[V]:
        return iter(list(self.live.values()))

    def allocate(self) -> int:
        """The next client id: 1, 2, 3 … (never a live one; 16 bits wrap past 0)."""
        for _ in range(65536):
            self.allocated += 1
            sid = self.allocated & 0xFFFF
            if sid and sid not in self.live:
                return sid
        raise OverflowError("every session id is live")

    def add(self, sid: int, value: V, udp: bool = False) -> V | None:
        """Register ``sid``; returns the live session it replaces (4.34 replaces silently)."""
        old = self.live.get(sid)
        self.live[sid] = value
        if udp:
            self.udp.add(sid)
        else:
            self.udp.discard(sid)
        if sid > self.highest:
            self.highest = sid
        return old

    def get(self, sid: int) -> V | None:
        """The live session ``sid``, or None."""
        return self.live.get(sid)

    def remove(self, sid: int, value: V | None = None) -> None:
        """Forget ``sid`` (only if it is still ``value``, when given)."""
        if value is not None and self.live.get(sid) is not value:
            return
        self.live.pop(sid, None)
        self.udp.discard(sid)

    def seen(self, sid: int) -> bool:
        """True if ``sid`` may have been live before (an id up to the highest announced)."""
        return sid <= self.highest
