"""In-memory test doubles shared across the test modules."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport


class HalfCloseTransport(StringTransport):
    """A StringTransport that records half-closes in ``writeClosed``.

    ``host``/``peer`` set its addresses (StringTransport's defaults otherwise).
    """

    def __init__(self, host: tuple[str, int] | None = None,
                 peer: tuple[str, int] | None = None) -> None:
        super().__init__(hostAddress=None if host is None else IPv4Address("TCP", *host),
                         peerAddress=None if peer is None else IPv4Address("TCP", *peer))
        self.writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True
