"""Exact replay filters for the VMess server (time injected, memory bounded).

V2Ray 4.34 uses two rotating cuckoo filters, which refuse roughly one valid connection in
two thousand. These are exact: a value is refused only if it really was seen.

* :class:`AuthIDFilter` remembers each accepted AuthID until its own timestamp leaves the
  +-120 s window; after that the timestamp check alone refuses it, so nothing is forgotten
  too early and no memory is kept longer than needed.
* :class:`SessionHistory` remembers (user, body key, body IV) for 3 minutes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable
from typing import Any

from vtwist.proxy.sharedreplay import SharedAuthIDFilter, SharedSessionHistory, shared
from vtwist.proxy.vmess.header import AUTH_ID_WINDOW

SESSION_HISTORY_SECONDS = 180
#: Upper bound on remembered entries; beyond it new entries are refused (fail closed).
DEFAULT_CAPACITY = 2_000_000


class AuthIDFilter:
    """Refuses an AuthID seen before while its timestamp is still acceptable."""

    def __init__(self, window: int = AUTH_ID_WINDOW, capacity: int = DEFAULT_CAPACITY) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: dict[bytes, float] = {}
        self._expiry: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        seen = self._seen
        while heap and heap[0][0] < now:
            _, key = heapq.heappop(heap)
            seen.pop(key, None)

    def check_and_add(self, auth_id: bytes, timestamp: int, now: float) -> bool:
        """True if ``auth_id`` is new (and remember it); False for a replay."""
        self._expire(now)
        key = bytes(auth_id)
        if key in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            return False
        # Valid while |ts - now| <= window, i.e. until now == ts + window (inclusive).
        expiry = max(float(timestamp + self._window), now)
        self._seen[key] = expiry
        heapq.heappush(self._expiry, (expiry, key))
        return True


class SessionHistory:
    """Refuses a repeated (user, key, IV) within 3 minutes."""

    def __init__(self, ttl: float = SESSION_HISTORY_SECONDS,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._seen: dict[Hashable, float] = {}
        self._order: deque[tuple[float, Hashable]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, session: Hashable, now: float) -> bool:
        """True if ``session`` is new (and remember it); False for a duplicate."""
        order = self._order
        seen = self._seen
        while order and order[0][0] <= now:
            expiry, key = order.popleft()
            if seen.get(key) == expiry:
                del seen[key]
        if session in seen:
            return False
        if len(seen) >= self._capacity:
            return False
        expiry = now + self._ttl
        seen[session] = expiry
        order.append((expiry, session))
        return True


def auth_id_filter() -> Any:
    """An inbound's AuthID filter: the one all workers share (``--workers``), or its own."""
    table = shared("vmess-auth-id")
    return SharedAuthIDFilter(table) if table is not None else AuthIDFilter()


def session_history() -> Any:
    """An inbound's legacy session history: shared by all workers, or its own."""
    table = shared("vmess-session")
    return SharedSessionHistory(table) if table is not None else SessionHistory()
