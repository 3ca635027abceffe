"""The Shadowsocks server's salt replay filter (sans-IO; beyond V2Ray 4.34).

A salt seen before marks a replayed connection or packet: the server treats it as a bad tag.
Memory is bounded by two rotating sets: when the current one holds ``capacity`` salts it
becomes the previous one and the oldest is dropped, so at least the last ``capacity`` and
at most the last ``2 * capacity`` salts are remembered.
"""

from __future__ import annotations

from typing import Any

from vtwist.proxy.sharedreplay import SharedSaltFilter, shared

#: Salts per set (two sets: up to about 2 * 65536 * 48 bytes of salts and set overhead).
CAPACITY = 65536


class SaltFilter:
    """Remembers recent salts; :meth:`check` says whether one is new and records it."""

    __slots__ = ("capacity", "_current", "_previous")

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()

    def __contains__(self, salt: object) -> bool:
        return salt in self._current or salt in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def check(self, salt: bytes) -> bool:
        """True (and remembered) for a salt not seen recently; False for a replay."""
        if salt in self._current or salt in self._previous:
            return False
        if len(self._current) >= self.capacity:
            self._previous = self._current
            self._current = set()
        self._current.add(salt)
        return True


def salt_filter(packets: bool = False) -> Any:
    """An inbound's salt filter (stream or ``packets``): the one all workers share
    (``--workers``), or its own :class:`SaltFilter`."""
    table = shared("ss-packet-salt" if packets else "ss-salt")
    return SharedSaltFilter(table) if table is not None else SaltFilter()
