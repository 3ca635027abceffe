"""Byte-level vectors for the gRPC length prefix and the gun ``Hunk``/``MultiHunk`` messages.

The expected bytes follow the gRPC-over-HTTP/2 spec (flag byte, 4-byte big-endian length)
and protobuf's wire format (key = field << 3 | wire type; ``0x0a`` is field 1, type 2), as
v2fly's and Xray's ``stream.proto`` (``Hunk { bytes data = 1; }``) serialize them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from vtwist.transport.grpc import framing
from vtwist.transport.grpc.framing import FramingError, MessageDecoder


class PrefixTests(SynchronousTestCase):
    def test_prefix(self) -> None:
        self.assertEqual(framing.message_prefix(0), b"\x00\x00\x00\x00\x00")
        self.assertEqual(framing.message_prefix(0x01020304), b"\x00\x01\x02\x03\x04")
        self.assertEqual(framing.message_prefix(5, compressed=True), b"\x01\x00\x00\x00\x05")
        self.assertEqual(framing.frame_message(b"abc"), b"\x00\x00\x00\x00\x03abc")

    def test_decoder_any_cut(self) -> None:
        stream = (framing.frame_message(b"one") + framing.frame_message(b"")
                  + framing.frame_message(b"x" * 300))
        for cut in range(len(stream) + 1):
            decoder = MessageDecoder()
            got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
            self.assertEqual(got, [b"one", b"", b"x" * 300], cut)
            self.assertEqual(decoder.pending, 0)
        decoder = MessageDecoder()
        got = [m for i in range(len(stream)) for m in decoder.feed(stream[i:i + 1])]
        self.assertEqual(got, [b"one", b"", b"x" * 300])

    def test_decoder_holds_partial(self) -> None:
        decoder = MessageDecoder()
        self.assertEqual(decoder.feed(b"\x00\x00\x00\x00\x05ab"), [])
        self.assertEqual(decoder.pending, 7)

    def test_decoder_refuses_compressed_and_huge(self) -> None:
        self.assertRaises(FramingError, MessageDecoder().feed, b"\x01\x00\x00\x00\x01a")
        self.assertRaises(FramingError, MessageDecoder().feed, b"\x02\x00\x00\x00\x00")
        self.assertRaises(FramingError, MessageDecoder(max_message=10).feed,
                          b"\x00\x00\x00\x00\x0b")


class ProtobufTests(SynchronousTestCase):
    def test_varint(self) -> None:
        for value, raw in [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"),
                           (300, b"\xac\x02"), (16384, b"\x80\x80\x01")]:
            self.assertEqual(framing.encode_varint(value), raw)
            self.assertEqual(framing.decode_varint(raw, 0), (value, len(raw)))
        self.assertRaises(FramingError, framing.decode_varint, b"\x80", 0)
        self.assertRaises(FramingError, framing.decode_varint, b"\xff" * 11, 0)

    def test_hunk_vectors(self) -> None:
        self.assertEqual(framing.encode_hunk(b"hi"), b"\x0a\x02hi")
        self.assertEqual(framing.hunk_message(b"hi"), b"\x00\x00\x00\x00\x04\x0a\x02hi")
        self.assertEqual(framing.hunk_message(b""), b"\x00\x00\x00\x00\x00")
        data = bytes(range(200))
        self.assertEqual(framing.hunk_message(data),
                         b"\x00\x00\x00\x00\xcb" + b"\x0a\xc8\x01" + data)
        self.assertEqual(framing.decode_hunk(b"\x0a\x02hi"), b"hi")
        self.assertEqual(framing.decode_hunk(b""), b"")

    def test_multi_hunk_vectors(self) -> None:
        self.assertEqual(framing.encode_multi_hunk([b"a", b"bc"]), b"\x0a\x01a\x0a\x02bc")
        self.assertEqual(framing.multi_hunk_message([b"a", b"bc"]),
                         b"\x00\x00\x00\x00\x07\x0a\x01a\x0a\x02bc")
        self.assertEqual(framing.multi_hunk_message([]), b"\x00\x00\x00\x00\x00")
        self.assertEqual(framing.decode_multi_hunk(b"\x0a\x01a\x0a\x00\x0a\x02bc"),
                         [b"a", b"", b"bc"])

    def test_unknown_fields_skipped(self) -> None:
        # field 2 varint 150, field 3 bytes, field 4 fixed32, field 5 fixed64, then data.
        raw = (b"\x10\x96\x01" + b"\x1a\x01z" + b"\x25\x01\x02\x03\x04"
               + b"\x29" + b"\x00" * 8 + b"\x0a\x03abc")
        self.assertEqual(framing.decode_hunk(raw), b"abc")
        self.assertEqual(framing.decode_multi_hunk(raw), [b"abc"])

    def test_bad_protobuf(self) -> None:
        for raw in [b"\x0a\x05ab", b"\x08\x01", b"\x0b", b"\x02\x00", b"\x0a"]:
            self.assertRaises(FramingError, framing.decode_hunk, raw)
