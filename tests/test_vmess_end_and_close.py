"""VMessTransport.endAndClose: the end-of-stream chunk and the close in one write below
where the lower transport offers ``closeWith`` (over TLS: the chunk's record and the
close_notify together), and as two steps where it does not."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from vtwist.proxy.vmess.body import (
    OPT_CHUNK_MASKING,
    OPT_CHUNK_STREAM,
    OPT_GLOBAL_PADDING,
    SEC_AES128_GCM,
    BodyDecoder,
    BodyEncoder,
)
from vtwist.proxy.vmess.transport import VMessTransport

KEY, IV = bytes(range(16)), bytes(range(16, 32))
OPTION = OPT_CHUNK_STREAM | OPT_CHUNK_MASKING | OPT_GLOBAL_PADDING


class ClosingWith(StringTransport):
    """A lower transport with ``closeWith``: records each call."""

    def __init__(self) -> None:
        super().__init__()
        self.closedWith: list[bytes] = []

    def closeWith(self, data: bytes) -> None:
        self.closedWith.append(data)
        self.loseConnection()


def decode(data: bytes) -> tuple[bytes, bool]:
    """The payload and whether the end-of-stream chunk came."""
    decoder = BodyDecoder(SEC_AES128_GCM, OPTION, KEY, IV)
    payload = b"".join(decoder.feed(data))
    return payload, decoder.eof


class EndAndCloseTests(SynchronousTestCase):
    def transport(self, lower: Any, header: bytes | None = None) -> VMessTransport:
        encoder = BodyEncoder(SEC_AES128_GCM, OPTION, KEY, IV)
        return VMessTransport(lower, encoder, (lambda: header) if header else None)

    def test_one_close_with_the_end_chunk(self) -> None:
        lower = ClosingWith()
        vmess = self.transport(lower)
        vmess.write(b"payload")
        vmess.endAndClose()
        [last] = lower.closedWith
        self.assertEqual(decode(lower.value() + last), (b"payload", True))
        self.assertTrue(vmess.writeClosed and vmess.disconnecting and lower.disconnecting)
        vmess.endAndClose()
        vmess.loseConnection()
        self.assertEqual(len(lower.closedWith), 1)  # nothing more goes out

    def test_header_never_sent_goes_with_it(self) -> None:
        lower = ClosingWith()
        vmess = self.transport(lower, header=b"HEAD")
        vmess.endAndClose()
        [last] = lower.closedWith
        self.assertTrue(last.startswith(b"HEAD"))
        self.assertEqual(decode(last[4:]), (b"", True))
        self.assertEqual(lower.value(), b"")

    def test_after_a_half_close_only_the_close(self) -> None:
        lower = ClosingWith()
        vmess = self.transport(lower)
        vmess.loseWriteConnection()
        sent = lower.value()
        vmess.endAndClose()
        self.assertEqual(lower.closedWith, [])  # the end chunk went already
        self.assertEqual(lower.value(), sent)
        self.assertTrue(lower.disconnecting)

    def test_lower_without_close_with(self) -> None:
        lower = StringTransport()
        vmess = self.transport(lower)
        vmess.write(b"x")
        vmess.endAndClose()
        self.assertEqual(decode(lower.value()), (b"x", True))
        self.assertTrue(lower.disconnecting)
