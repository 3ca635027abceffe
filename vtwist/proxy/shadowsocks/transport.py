"""The decrypted Shadowsocks stream presented as an ordinary Twisted transport.

Writes are sealed into chunks (the salt, and on the client the address, go with the first
one) and leave on the lower transport with one ``writeSequence``; producers, pausing and
addresses pass straight through, so backpressure runs end to end. Shadowsocks has no
end-of-stream chunk of its own: ``loseWriteConnection`` half-closes the TCP connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableDescriptor,
    IPushProducer,
    ITransport,
)
from zope.interface import implementer

from vtwist.proxy.shadowsocks.aead import MAX_PAYLOAD
from vtwist.transport.internals import read_whole_units
from vtwist.transport.passthrough import WrappingTransportMixin

Encode = Callable[[Any], list[bytes]]


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class ShadowsocksTransport(WrappingTransportMixin):
    """Plain side of one Shadowsocks connection; ``lower`` carries the wire bytes.

    ``encode(data) -> list[bytes]`` is the direction's encoder (a StreamEncoder's or a
    ClientStream's ``encode``).
    """

    def __init__(self, lower: Any, encode: Encode) -> None:
        self.lower = lower
        self.encode = encode
        self.disconnecting = False
        self.writeClosed = False

    def write(self, data: bytes) -> None:
        """Seal and send."""
        if self.writeClosed or self.disconnecting or not data:
            return
        self.lower.writeSequence(self.encode(data))

    def writeSequence(self, data: Any) -> None:
        """Seal several pieces as one write."""
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register on the lower transport. A producer that is a socket (the relay's other
        side) reads 4 whole chunks at a time (65532 bytes, not 65536: one small fifth chunk,
        two AEAD calls, less per read)."""
        read_whole_units(producer, MAX_PAYLOAD)
        self.lower.registerProducer(producer, streaming)

    def flush(self) -> None:
        """Send what the encoder holds back (the client's salt and address) on its own."""
        if not self.disconnecting and not self.writeClosed:
            pieces = self.encode(b"")
            if pieces:
                self.lower.writeSequence(pieces)

    def loseWriteConnection(self) -> None:
        """Half-close the TCP connection; the other direction keeps flowing."""
        if self.writeClosed or self.disconnecting:
            return
        self.writeClosed = True
        half_close = getattr(self.lower, "loseWriteConnection", None)
        if half_close is not None:
            half_close()

    def loseConnection(self) -> None:
        """Close the lower connection once written bytes are out."""
        if self.disconnecting:
            return
        self.disconnecting = True
        self.lower.loseConnection()
