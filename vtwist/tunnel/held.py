"""Input that arrives before a relay exists: kept, then replayed once, in order.

Both sides of a tunnel can receive bytes before they are joined: the inbound's client sends
early data while the outbound connects, and the outbound's server may speak first while the
inbound still writes its reply. Each side keeps them in a :class:`HeldInput` with its
transport paused, and :meth:`HeldInput.replay` hands them over once the relay is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

if TYPE_CHECKING:
    from vtwist.tunnel.relay import Relay


class HeldInput:
    """Chunks, a half-close and a loss that arrived before the relay (bounded by the pause)."""

    __slots__ = ("chunks", "eof", "lost", "lostReason")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.eof = False
        self.lost = False
        self.lostReason: Failure | None = None

    def data(self, data: Any) -> None:
        """Keep one chunk."""
        self.chunks.append(data)

    def extend(self, chunks: list[Any]) -> None:
        """Keep several chunks."""
        self.chunks.extend(chunks)

    def connectionLost(self, reason: Failure | None) -> None:
        """The side's connection ended before the relay."""
        self.lost = True
        self.lostReason = reason

    def clear(self) -> None:
        """Drop what was kept (the tunnel failed)."""
        self.chunks = []

    def replay(self, relay: Relay, side: int, transport: Any) -> None:
        """Resume ``transport``, then hand everything kept to ``relay`` as ``side``.

        Resume first: a replayed write may legitimately pause this side again, and resuming
        afterwards would undo that. Transports deliver resumed reads later, on the reactor,
        so the kept bytes still come first.
        """
        if not self.lost and not self.eof and transport is not None:
            transport.resumeProducing()
        chunks, self.chunks = self.chunks, []
        if chunks and not relay.finished:
            relay.receivedSequence(side, chunks)
        if self.lost:
            relay.lost(side, self.lostReason)
        elif self.eof:
            relay.eof(side)
