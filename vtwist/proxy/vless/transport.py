"""The plain side of a VLESS connection as an ordinary Twisted transport.

VLESS adds no framing to a TCP stream: after its header, bytes pass unchanged. This wrapper
only puts the header (the request on the client, the response on the server) in front of the
first bytes written, as 4.34 does, and for a UDP request writes each datagram with its
2-byte length. Producer registration, pausing and addresses pass straight through.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableDescriptor,
    IPushProducer,
    ITransport,
)
from zope.interface import implementer

from vtwist.proxy.vless.codec import encode_packet
from vtwist.transport.passthrough import WrappingTransportMixin


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class VLESSTransport(WrappingTransportMixin):
    """Writes go to ``lower`` after ``header`` (sent once); ``packet``: one framed datagram
    per write."""

    def __init__(self, lower: Any, header: bytes = b"", packet: bool = False) -> None:
        self.lower = lower
        self.header = header
        self.packet = packet
        self.disconnecting = False
        self.writeClosed = False

    @property
    def lower_gone(self) -> bool:
        """True if the lower transport is already closing."""
        return bool(getattr(self.lower, "disconnected", False))

    def flushHeader(self) -> None:
        """Send the header now, alone, if it has not gone out yet."""
        if self.header and not self.lower_gone:
            header, self.header = self.header, b""
            self.lower.write(header)

    def write(self, data: bytes) -> None:
        """Send ``data`` (one datagram in packet mode)."""
        if self.writeClosed or self.disconnecting or not data:
            return
        if self.packet:
            data = encode_packet(data)
            if not data:
                return
        if self.header:
            header, self.header = self.header, b""
            self.lower.writeSequence([header, data])
        else:
            self.lower.write(data)

    def writeSequence(self, data: Any) -> None:
        """Send several pieces (several datagrams in packet mode)."""
        if self.packet:
            for piece in data:
                self.write(piece)
            return
        if self.writeClosed or self.disconnecting:
            return
        if self.header:
            header, self.header = self.header, b""
            self.lower.writeSequence([header, *data])
        else:
            self.lower.writeSequence(data)

    def loseWriteConnection(self) -> None:
        """Half-close: the header (if still pending), then the lower transport's half-close
        where it has one (TCP); over TLS or WebSocket nothing more is sent."""
        if self.writeClosed or self.disconnecting:
            return
        self.writeClosed = True
        self.flushHeader()
        half_close = getattr(self.lower, "loseWriteConnection", None)
        if half_close is not None:
            half_close()

    def loseConnection(self) -> None:
        """Flush the header if it never went out, then close the lower connection."""
        if self.disconnecting:
            return
        self.disconnecting = True
        self.flushHeader()
        # A paused lower transport could never read the peer's goodbye (TLS close_notify,
        # WebSocket close): whatever arrives now is dropped anyway.
        self.lower.resumeProducing()
        self.lower.loseConnection()
