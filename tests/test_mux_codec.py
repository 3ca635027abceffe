"""The Mux.Cool frame codec and session table against mux-vectors.json, 4.34's reader
limits, Xray's forms, and hypothesis (no exception but MuxError)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.mux import frame as F
from vtwist.proxy.mux.sessions import SessionTable

VECTORS = Path("/work/shared/protocol/mux-vectors.json")
LOCAL = Path(__file__).parent / "vectors" / "mux-vectors.json"


def load_vectors() -> list[dict]:
    path = LOCAL if LOCAL.exists() else VECTORS
    return json.loads(path.read_text())["vectors"]


STATUS = {"New": F.NEW, "Keep": F.KEEP, "End": F.END, "KeepAlive": F.KEEPALIVE}


def unpack(item: F.Frame | tuple) -> F.Frame:
    """A :meth:`~F.FrameDecoder.feed_compact` item as the frame :meth:`feed` gives."""
    return F.Frame(*item[:3], None, item[3]) if type(item) is tuple else item


class VectorTests(SynchronousTestCase):
    """Every vector decodes to its fields; those vtwist writes encode to its bytes."""

    def test_decode_all(self) -> None:
        for v in load_vectors():
            raw = bytes.fromhex(v["hex"])
            udp = {4} if "udp_keep" in v["name"] else ()
            frames = F.FrameDecoder(udp).feed(raw)
            if v["name"].startswith("stream_"):
                self.assertEqual([f.status for f in frames], [F.NEW, F.KEEP, F.END])
                self.assertEqual(frames[0].data + frames[1].data, b"helloworld")
                continue
            self.assertEqual(len(frames), 1, v["name"])
            (fr,) = frames
            fields = v["fields"]
            self.assertEqual(fr.session_id, fields["session_id"], v["name"])
            self.assertEqual(fr.status, STATUS[fields["status"]], v["name"])
            self.assertEqual(fr.option, fields["option"], v["name"])
            if "data_hex" in fields:
                self.assertEqual(fr.data, bytes.fromhex(fields["data_hex"]), v["name"])
            if fields["status"] == "New":
                self.assertEqual(fr.target.port, fields["port"])
                self.assertEqual(fr.target.network, fields["network"])
                self.assertEqual(fr.target.host, fields["address"])
            if "extra_metadata_hex" in fields and fields["status"] == "New":
                self.assertEqual(fr.global_id, bytes.fromhex(fields["extra_metadata_hex"]))
            elif "extra_metadata_hex" in fields:
                self.assertEqual(fr.target, Destination.udp("1.1.1.1", 53))

    def test_encode(self) -> None:
        by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in load_vectors()}
        self.assertEqual(F.encode_new(1, Destination.tcp("example.com", 443), b"hello"),
                         by_name["tcp_new_domain_with_data"])
        self.assertEqual(F.encode_new(2, Destination.tcp("1.2.3.4", 80)),
                         by_name["tcp_new_ipv4_no_data"])
        self.assertEqual(F.encode_new(3, Destination.tcp("2001:db8::1", 8080)),
                         by_name["tcp_new_ipv6_no_data"])
        self.assertEqual(b"".join(F.encode_keep(1, b"world")), by_name["tcp_keep_5_bytes"])
        self.assertEqual(F.encode_end(1), by_name["end"])
        self.assertEqual(F.encode_end(2, error=True), by_name["end_with_error"])
        self.assertEqual(F.encode_keepalive(), by_name["keepalive"])
        dns = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
        self.assertEqual(F.encode_new(4, Destination.udp("8.8.8.8", 53), dns),
                         by_name["udp_new_ipv4_with_datagram"])
        self.assertEqual(F.encode_new(0, Destination.udp("8.8.8.8", 53), dns,
                                      bytes.fromhex("0102030405060708")),
                         by_name["xray_xudp_new_with_global_id"])
        self.assertEqual(b"".join(F.encode_keep(0, dns, Destination.udp("1.1.1.1", 53))),
                         by_name["xray_udp_keep_with_address"])

    def test_byte_at_a_time(self) -> None:
        """Frame boundaries need not match the pieces the carrier delivers."""
        raw = b"".join(bytes.fromhex(v["hex"]) for v in load_vectors()
                       if v["name"].startswith(("tcp_", "end", "keepalive")))
        whole = F.FrameDecoder().feed(raw)
        dec = F.FrameDecoder()
        pieces = []
        for i in range(len(raw)):
            pieces += dec.feed(raw[i:i + 1])
        self.assertEqual(pieces, whole)
        self.assertTrue(dec.at_boundary)


    def test_every_split_of_mixed_frames(self) -> None:
        """Keep/End frames read inline, a New with data, an empty Keep, KeepAlive, a UDP
        New: the same frames whatever two pieces the bytes arrive in."""
        raw = b"".join([
            F.encode_new(1, Destination.tcp("example.com", 443), b"hello"),
            *F.encode_keep(1, b"x" * 300), F.encode_end(1), F.encode_keepalive(),
            F.encode_new(2, Destination.tcp("10.0.0.1", 80)), *F.encode_keep(2, b""),
            F.encode_new(3, Destination.udp("8.8.8.8", 53), b"query"), F.encode_end(2, True),
            b"\x00\x04\x00\x03\x02\x00",  # Keep without data
        ])
        whole = F.FrameDecoder().feed(raw)
        self.assertEqual([(f.session_id, f.status) for f in whole],
                         [(1, F.NEW), (1, F.KEEP), (1, F.END), (0, F.KEEPALIVE), (2, F.NEW),
                          (2, F.KEEP), (3, F.NEW), (2, F.END), (3, F.KEEP)])
        self.assertEqual([f.data for f in whole],
                         [b"hello", b"x" * 300, None, None, None, b"", b"query", None, None])
        for cut in range(len(raw) + 1):
            dec = F.FrameDecoder()
            self.assertEqual(dec.feed(raw[:cut]) + dec.feed(raw[cut:]), whole)
            self.assertTrue(dec.at_boundary)
            dec = F.FrameDecoder()
            compact = dec.feed_compact([raw[:cut]]) + dec.feed_compact([raw[cut:]])
            self.assertEqual([unpack(f) for f in compact], whole)
            self.assertTrue(dec.at_boundary)
        # whole plain frames come as tuples (the carrier's hot path), the rest as frames
        kinds = [type(f) for f in F.FrameDecoder().feed_compact([raw])]
        self.assertEqual(kinds, [F.Frame, tuple, tuple, tuple, F.Frame, tuple, F.Frame,
                                 tuple, tuple])

    def test_bad_length_reported_before_the_metadata(self) -> None:
        """A metadata length 4.34 would refuse fails as soon as its two bytes arrive."""
        for head in (b"\x02\x01", b"\x00\x03", b"\x00\x00"):
            with self.assertRaises(F.MuxError):
                F.FrameDecoder().feed(head)
        dec = F.FrameDecoder()
        self.assertEqual(dec.feed(b"\x00\x04\x00"), [])  # a fine length waits for more
        self.assertFalse(dec.at_boundary)


class LimitTests(SynchronousTestCase):
    """4.34's reader limits (mux.md §2.4, §5.2)."""

    def assertFails(self, raw: bytes, words: str, udp: tuple[int, ...] = ()) -> None:
        with self.assertRaises(F.MuxError) as cm:
            F.FrameDecoder(udp).feed(raw)
        self.assertIn(words, str(cm.exception))

    def test_metadata_too_long(self) -> None:
        self.assertFails(b"\x02\x01" + b"\x00" * 513, "too long")

    def test_metadata_512_accepted(self) -> None:
        meta = b"\x00\x01\x02\x00" + b"\x00" * 508
        (fr,) = F.FrameDecoder().feed(len(meta).to_bytes(2, "big") + meta)
        self.assertEqual(fr.status, F.KEEP)

    def test_metadata_too_short(self) -> None:
        self.assertFails(b"\x00\x03\x00\x01\x02", "too short")

    def test_new_too_short(self) -> None:
        self.assertFails(b"\x00\x06\x00\x01\x01\x00\x01\x00", "too short")

    def test_unknown_status(self) -> None:
        self.assertFails(b"\x00\x04\x00\x01\x07\x00", "unknown status 7")

    def test_unknown_network(self) -> None:
        self.assertFails(bytes.fromhex("000c00010100030050010102030a"), "unknown network 3")

    def test_new_without_address(self) -> None:
        self.assertFails(bytes.fromhex("00080001010001005002"), "address")
        self.assertFails(bytes.fromhex("00070001010001 0050".replace(" ", "")), "too short")
        self.assertFails(bytes.fromhex("0009000101000100500709"), "address type")

    def test_bad_domain(self) -> None:
        self.assertFails(bytes.fromhex("000b000101000100500202") + b"a b", "invalid domain")

    def test_udp_datagram_over_limit(self) -> None:
        big = b"\x00" * 2049
        self.assertFails(b"".join(F.encode_keep(5, big)), "over 2048", udp=(5,))
        with self.assertRaises(F.MuxError):  # the carrier's compact reading too
            F.FrameDecoder((5,)).feed_compact([b"".join(F.encode_keep(5, big))])
        self.assertEqual(len(unpack(F.FrameDecoder((6,)).feed_compact(
            [b"".join(F.encode_keep(5, big))])[0]).data), 2049)  # 5 is not UDP there
        self.assertFails(F.encode_new(5, Destination.udp("1.2.3.4", 53), big), "over 2048")
        # TCP sessions take any u16 length
        (fr,) = F.FrameDecoder().feed(b"".join(F.encode_keep(5, big)))
        self.assertEqual(len(fr.data), 2049)

    def test_truncated_payload(self) -> None:
        dec = F.FrameDecoder()
        self.assertEqual(dec.feed(b"".join(F.encode_keep(1, b"x" * 100))[:50]), [])
        with self.assertRaises(F.MuxError) as cm:
            dec.end()
        self.assertIn("inside a frame", str(cm.exception))

    def test_clean_end(self) -> None:
        dec = F.FrameDecoder()
        dec.feed(F.encode_end(1))
        dec.end()

    def test_trailing_metadata_and_unknown_options_ignored(self) -> None:
        (fr,) = F.FrameDecoder().feed(b"\x00\x07\x00\x09\x03\xf0abc")
        self.assertEqual((fr.session_id, fr.status, fr.error), (9, F.END, False))

    def test_dead_after_error(self) -> None:
        dec = F.FrameDecoder()
        self.assertRaises(F.MuxError, dec.feed, b"\xff\xff")
        self.assertRaises(F.MuxError, dec.feed, F.encode_end(1))

    def test_split_stream(self) -> None:
        data = bytes(range(256)) * 100  # 25600 bytes -> 8192 * 3 + 1024
        frames = F.FrameDecoder().feed(b"".join(F.split_stream(3, data)))
        self.assertEqual([len(f.data) for f in frames], [8192, 8192, 8192, 1024])
        self.assertEqual(b"".join(f.data for f in frames), data)


class CacheTests(SynchronousTestCase):
    """New frames' addresses are encoded and parsed once per destination; the caches give
    the same answers as the first time and stay bounded."""

    def test_new_frames_round_trip_through_the_caches(self) -> None:
        dests = [Destination.tcp("example.com", 80), Destination.tcp("example.com", 443),
                 Destination.udp("example.com", 80), Destination.tcp("10.0.0.1", 80),
                 Destination.tcp("2001:db8::1", 80)]
        for _ in range(2):
            wire = b"".join(F.encode_new(i, d, b"x") for i, d in enumerate(dests))
            frames = F.FrameDecoder().feed(wire)
            self.assertEqual([f.target for f in frames], dests)
        gid = F.FrameDecoder().feed(F.encode_new(1, dests[2], b"q", b"\x07" * 8))[0]
        self.assertEqual((gid.target, gid.global_id), (dests[2], b"\x07" * 8))

    def test_cached_new_frames_are_whole(self) -> None:
        """A New read from the destination cache (the second time) is the same frame as the
        first time: id, option, data and XUDP global id included, with and without data."""
        dest, udp = Destination.tcp("cache.example", 8080), Destination.udp("cache.example", 53)
        wire = b"".join([F.encode_new(7, dest, b"first"), F.encode_new(300, dest),
                         F.encode_new(9, udp, b"dns", b"\x01" * 8), F.encode_new(10, udp)])
        want = [F.Frame(7, F.NEW, F.OPT_DATA, dest, b"first"), F.Frame(300, F.NEW, 0, dest),
                F.Frame(9, F.NEW, F.OPT_DATA, udp, b"dns", b"\x01" * 8),
                F.Frame(10, F.NEW, 0, udp)]
        for _ in range(3):
            self.assertEqual(F.FrameDecoder().feed(wire), want)

    def test_bounded(self) -> None:
        for port in range(F._NEW_TARGET_CACHE + 10):
            dest = Destination.tcp("example.org", port % 65536)
            (frame,) = F.FrameDecoder().feed(F.encode_new(1, dest))
            self.assertEqual(frame.target, dest)
        self.assertLessEqual(len(F._NEW_TARGETS), F._NEW_TARGET_CACHE)
        self.assertLessEqual(len(F._ADDRESSES), F._ADDRESS_CACHE)

    def test_bad_domain_not_cached(self) -> None:
        with self.assertRaises(ValueError):
            F.encode_address(Destination.tcp("x" * 256, 80))
        with self.assertRaises(ValueError):
            F.encode_address(Destination.tcp("x" * 256, 80))


class SessionTableTests(SynchronousTestCase):
    """Ids as the 4.34 client allocates them; lookups; what was seen."""

    def test_allocate(self) -> None:
        t: SessionTable[str] = SessionTable()
        self.assertEqual([t.allocate() for _ in range(3)], [1, 2, 3])

    def test_add_remove(self) -> None:
        t: SessionTable[str] = SessionTable()
        t.add(4, "a", udp=True)
        self.assertIn(4, t.udp)
        self.assertEqual(t.add(4, "b"), "a")
        self.assertNotIn(4, t.udp)
        t.remove(4, "a")  # not the live one
        self.assertEqual(t.get(4), "b")
        t.remove(4)
        self.assertIsNone(t.get(4))
        self.assertTrue(t.seen(3))
        self.assertFalse(t.seen(5))


class FuzzTests(SynchronousTestCase):
    """Arbitrary bytes: frames or MuxError, nothing else."""

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.binary(max_size=80), max_size=8), st.sets(st.integers(0, 8)))
    def test_random_bytes(self, pieces: list[bytes], udp: set[int]) -> None:
        dec = F.FrameDecoder(udp)
        try:
            for piece in pieces:
                dec.feed(piece)
            dec.end()
        except F.MuxError:
            pass

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 8), st.sampled_from([2, 3, 4, 5]),
                              st.integers(0, 3), st.sampled_from([0, 1, 7, 2048, 2049]))),
           st.lists(st.integers(0, 20000), max_size=6), st.sets(st.integers(0, 8)))
    def test_compact_reading_agrees(self, frames: list[tuple[int, int, int, int]],
                                    cuts: list[int], udp: set[int]) -> None:
        """Plain frames (a status 5 is bad input), any data size around the UDP limit, cut
        anywhere: the carrier's compact reading gives the frames feed gives, and fails
        where feed fails."""
        raw = b"".join(
            bytes([0, 4, 0, sid, status, option])
            + ((size.to_bytes(2, "big") + b"d" * size) if option & 1 else b"")
            for sid, status, option, size in frames)
        bounds = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
        pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

        def read(compact: bool) -> tuple[list[F.Frame], bool]:
            dec, got = F.FrameDecoder(udp), []
            try:
                for piece in pieces:
                    got += ([unpack(f) for f in dec.feed_compact([piece])] if compact
                            else dec.feed(piece))
            except F.MuxError:
                return got, True
            return got, False

        self.assertEqual(read(True), read(False))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=4, max_size=40), st.integers(0, 3), st.binary(max_size=30))
    def test_framed_metadata(self, meta: bytes, option: int, data: bytes) -> None:
        """Well-framed but arbitrary metadata."""
        raw = len(meta).to_bytes(2, "big") + meta
        if meta[3] & 1:
            raw += len(data).to_bytes(2, "big") + data
        try:
            F.FrameDecoder().feed(raw)
        except F.MuxError:
            pass
