"""The decoded VMess stream presented as an ordinary Twisted transport.

Like ``TLSMemoryBIOProtocol``'s transport: the application (or the relay) writes plain
bytes; they leave as VMess chunks on the lower transport. Producer registration, pausing
and peer/host queries pass straight through, so backpressure works end to end.
``loseWriteConnection`` is VMess's half-close: it sends the end-of-stream chunk and keeps
the TCP connection open for the other direction.
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

from vtwist.proxy.vmess.body import BodyEncoder
from vtwist.transport.passthrough import WrappingTransportMixin


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class VMessTransport(WrappingTransportMixin):
    """Plain side of one VMess connection; ``lower`` carries the wire bytes.

    ``header`` is a callable giving the header bytes (request header on the client,
    response header on the server); it is called once, when the first chunk, the
    end-of-stream chunk or :meth:`flushHeader` needs it, so the header travels together
    with the first payload.
    """

    def __init__(self, lower: Any, encoder: BodyEncoder,
                 header: Callable[[], bytes] | None = None,
                 onFirstData: Callable[[], None] | None = None) -> None:
        self.lower = lower
        self.encoder = encoder
        self._header = header
        #: called once, when the application first writes payload bytes
        self._onFirstData = onFirstData
        self.disconnecting = False
        self.writeClosed = False

    # -- writing -------------------------------------------------------------------
    def _takeHeader(self) -> list[bytes]:
        header, self._header = self._header, None
        return [header()] if header is not None else []

    def flushHeader(self) -> None:
        """Send the header now, alone, if it has not gone out yet."""
        if self._header is not None and not self.lower_gone:
            self.lower.write(self._takeHeader()[0])

    @property
    def lower_gone(self) -> bool:
        """True if the lower transport is already closing."""
        return bool(getattr(self.lower, "disconnected", False))

    def write(self, data: bytes) -> None:
        """Encode and send (one datagram per call in UDP mode)."""
        if self.writeClosed or self.disconnecting or not data:
            return
        if self._onFirstData is not None:
            first, self._onFirstData = self._onFirstData, None
            first()
        header = self._header
        if header is None:
            pieces = self.encoder.encode_sequence(data)
        else:
            self._header = None
            pieces = [header()]
            pieces += self.encoder.encode_sequence(data)
        if pieces:
            self.lower.writeSequence(pieces)

    def writeSequence(self, data: Any) -> None:
        """Encode several pieces as one write (stream mode)."""
        if self.encoder.packet:
            for piece in data:
                self.write(piece)
            return
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Send the end-of-stream chunk; the other direction keeps flowing."""
        if self.writeClosed or self.disconnecting:
            return
        self.writeClosed = True
        pieces = self._takeHeader() + self.encoder.end()
        if pieces:
            self.lower.writeSequence(pieces)

    def endAndClose(self) -> None:
        """:meth:`loseWriteConnection` then :meth:`loseConnection`: the end-of-stream chunk
        (with the header if it never went out) and the close in one write below where the
        lower transport can (``closeWith``: over TLS the chunk's record and the
        close_notify leave together)."""
        if self.disconnecting:
            return
        pieces = self._takeHeader() if not self.lower_gone else []
        if not self.writeClosed:
            self.writeClosed = True
            pieces += self.encoder.end()
        self.disconnecting = True
        close_with = getattr(self.lower, "closeWith", None)
        if pieces and close_with is not None:
            close_with(b"".join(pieces))
            return
        if pieces:
            self.lower.writeSequence(pieces)
        self.lower.loseConnection()

    def loseConnection(self) -> None:
        """Flush the header if it never went out, then close the lower connection."""
        if self.disconnecting:
            return
        self.disconnecting = True
        if self._header is not None and not self.lower_gone:
            self.lower.write(self._takeHeader()[0])
        self.lower.loseConnection()
