"""Which mKCP sessions are alive, and the totals of the ended ones, for the metrics.

A session registers itself when created and retires when it ends; the Prometheus exporter
reads :data:`LIVE` and :data:`RETIRED` when scraped. Labels are bounded: ``role`` (server,
client) and the ``header`` obfuscation type.
"""

from __future__ import annotations

import weakref
from typing import Any

#: every live session's transport (a KCPTransport)
LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
#: (role, header) -> [sessions ended, DATA segments sent, retransmissions]
RETIRED: dict[tuple[str, str], list[int]] = {}


def labels(transport: Any) -> tuple[str, str]:
    """``(role, header)`` of a session's transport."""
    owner = transport.owner
    role = "server" if type(owner).__name__ == "KCPListener" else "client"
    config = getattr(owner, "config", None)
    return role, str(getattr(config, "header_type", "none") or "none")


def register(transport: Any) -> None:
    """A session started."""
    LIVE.add(transport)


def retire(transport: Any) -> None:
    """A session ended: keep its counts in the totals."""
    if transport not in LIVE:
        return
    LIVE.discard(transport)
    totals = RETIRED.setdefault(labels(transport), [0, 0, 0])
    session = transport.session
    totals[0] += 1
    totals[1] += session.segments_sent
    totals[2] += session.retransmissions
