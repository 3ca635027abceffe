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

    __slots__ = ("chunks", "eof", "lost", "lostReason", "paused")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.eof = False
        self.lost = False
        self.lostReason: Failure | None = None
        #: :meth:`hold` paused the side's transport (so the replay resumes it)
        self.paused = False

    def data(self, data: Any) -> None:
        """Keep one chunk."""
        self.chunks.append(data)

    def extend(self, chunks: list[Any]) -> None:
        """Keep several chunks."""
        self.chunks.extend(chunks)

    def hold(self, chunks: list[Any], transport: Any) -> None:
        """Keep ``chunks`` and pause ``transport`` the first time anything is kept: the side
        is paused only when it sends before the relay exists (most wait for an answer), so
        what is kept stays within about one read. Replay with :meth:`pausedTransport`."""
        self.chunks.extend(chunks)
        if not self.paused:
            self.paused = True
            transport.pauseProducing()

    def pausedTransport(self, transport: Any) -> Any:
        """``transport`` if :meth:`hold` paused it (for :meth:`replay` to resume), else None."""
        return transport if self.paused else None

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
