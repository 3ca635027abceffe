"""VMess chunk sizes: 16 KiB chunks by default, V2Ray's 2048 on request, datagrams at 2048.

Chunk boundaries (a write of exactly one chunk's payload, one byte more), the limit the
strictest reader in the field enforces (sing-vmess: the sealed part of a chunk fits 16384
bytes), ``encode_sequence`` (pieces for ``writeSequence``) against ``encode``, the decoder
fed across every boundary, and the ``chunkSize`` outbound setting down to the wire.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_vmess_client import NOW, App, FakeEndpoint
from vtwist.address import Destination
from vtwist.config.node import ConfigError, Node
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess.body import (
    DEFAULT_SEND_CHUNK,
    MAX_CHUNK,
    MAX_PADDING,
    MAX_SEND_CHUNK,
    NONE_STREAM_SLICE,
    OPT_CHUNK_MASKING,
    OPT_CHUNK_STREAM,
    OPT_GLOBAL_PADDING,
    SEC_AES128_GCM,
    SEC_CHACHA20_POLY1305,
    SEC_LEGACY,
    SEC_NONE,
    BodyDecoder,
    BodyEncoder,
    ShakeStream,
    aes_cfb,
)
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.handshake import RequestParsed, ServerHandshake, default_option
from vtwist.proxy.vmess.outbound import VMessOutbound
from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
from vtwist.proxy.vmess.settings import parse_outbound_settings
from vtwist.proxy.vmess.users import Account, UserTable

SECURITIES = [SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_NONE, SEC_LEGACY]
OPTIONS = [OPT_CHUNK_STREAM,
           OPT_CHUNK_STREAM | OPT_CHUNK_MASKING,
           OPT_CHUNK_STREAM | OPT_CHUNK_MASKING | OPT_GLOBAL_PADDING]
KEY, IV = bytes(range(16)), bytes(range(16, 32))
OVERHEAD = {SEC_AES128_GCM: 16, SEC_CHACHA20_POLY1305: 16, SEC_NONE: 0, SEC_LEGACY: 4}
#: sing-vmess's ReadChunkSize: the sealed part of a chunk must fit a buffer this large
SING_VMESS_READ_CHUNK = 16384
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def zero_padding(n: int) -> bytes:
    """Deterministic padding, so two encoders produce the same bytes."""
    return b"\0" * n


def plain_wire(security: int, wire: bytes) -> bytes:
    """The chunk stream under legacy's AES-CFB layer (other securities: as is)."""
    if security != SEC_LEGACY:
        return wire
    return aes_cfb(KEY, IV, encrypt=False).update(wire)


def chunk_fields(security: int, option: int, wire: bytes) -> list[tuple[int, int]]:
    """(sealed length, padding) of every chunk in ``wire``, read the way a reader does."""
    wire = plain_wire(security, wire)
    shake = ShakeStream(IV) if option & OPT_CHUNK_MASKING else None
    padding = bool(option & OPT_GLOBAL_PADDING) and security != SEC_NONE
    fields = []
    pos = 0
    while pos < len(wire):
        size = (wire[pos] << 8) | wire[pos + 1]
        pad = 0
        if padding:
            pad = shake.next_word() % MAX_PADDING  # type: ignore[union-attr]
        if shake is not None:
            size ^= shake.next_word()
        fields.append((size - pad, pad))
        pos += 2 + size
    assert pos == len(wire), (pos, len(wire))
    return fields


class ChunkLimits(SynchronousTestCase):
    """Where 16 KiB chunks are cut, and that they stay within every reader's limit."""

    def test_default_is_16k_for_senders_and_2048_for_the_codec(self) -> None:
        self.assertEqual(DEFAULT_SEND_CHUNK, 16384)
        self.assertEqual(MAX_SEND_CHUNK, SING_VMESS_READ_CHUNK)
        self.assertEqual(BodyEncoder(SEC_AES128_GCM, OPTIONS[2], KEY, IV).chunk_size, 2048)

    def test_chunk_size_outside_range_refused(self) -> None:
        for bad in (0, MAX_CHUNK - 1, MAX_SEND_CHUNK + 1, 65535):
            self.assertRaises(ValueError, BodyEncoder, SEC_AES128_GCM, OPTIONS[2], KEY, IV,
                              chunk_size=bad)

    def test_every_chunk_within_chunk_size_and_sealed_part_within_sing_vmess(self) -> None:
        data = os.urandom(200_000)
        for security in SECURITIES:
            for option in OPTIONS:
                for size in (MAX_CHUNK, 4096, MAX_SEND_CHUNK):
                    enc = BodyEncoder(security, option, KEY, IV, chunk_size=size)
                    chunks = enc.encode(data)
                    wire = b"".join(chunks)
                    fields = chunk_fields(security, option, wire)
                    self.assertEqual(len(fields), len(chunks))
                    if security == SEC_NONE:  # V2Ray's 8192 slices, or larger chunks
                        limit = max(NONE_STREAM_SLICE + 2, size)
                    else:
                        limit = size
                    for (sealed, pad), chunk in zip(fields, chunks, strict=True):
                        self.assertEqual(len(chunk), 2 + sealed + pad)
                        self.assertLessEqual(len(chunk), limit, (security, option, size))
                        self.assertLessEqual(sealed, SING_VMESS_READ_CHUNK)

    def test_boundaries(self) -> None:
        """A write of max_payload bytes is one chunk, one more byte makes two."""
        for security in SECURITIES:
            for option in OPTIONS:
                for size in (MAX_CHUNK, MAX_SEND_CHUNK):
                    enc = BodyEncoder(security, option, KEY, IV, chunk_size=size,
                                      random_bytes=zero_padding)
                    step = enc.max_payload
                    padded = bool(option & OPT_GLOBAL_PADDING) and security != SEC_NONE
                    if security == SEC_NONE:
                        self.assertEqual(step, max(NONE_STREAM_SLICE, size - 2))
                    else:
                        self.assertEqual(step, size - 2 - OVERHEAD[security]
                                         - (MAX_PADDING if padded else 0))
                    dec = BodyDecoder(security, option, KEY, IV)
                    for n, count in ((step - 1, 1), (step, 1), (step + 1, 2),
                                     (2 * step, 2), (2 * step + 1, 3)):
                        data = os.urandom(n)
                        chunks = enc.encode(data)
                        self.assertEqual(len(chunks), count, (security, option, size, n))
                        got = dec.feed(b"".join(chunks))
                        self.assertEqual([len(p) for p in got],
                                         [step] * (count - 1) + [n - step * (count - 1)])
                        self.assertEqual(b"".join(got), data)

    def test_largest_chunk_fills_chunk_size_exactly(self) -> None:
        """Without padding the largest chunk is exactly chunk_size bytes."""
        for security in (SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_LEGACY, SEC_NONE):
            enc = BodyEncoder(security, OPTIONS[1], KEY, IV, chunk_size=MAX_SEND_CHUNK)
            chunk = enc.encode(os.urandom(enc.max_payload))[0]
            self.assertEqual(len(chunk), MAX_SEND_CHUNK, security)

    def test_datagrams_keep_2048(self) -> None:
        for security in SECURITIES:
            enc = BodyEncoder(security, OPTIONS[2], KEY, IV, packet=True,
                              chunk_size=MAX_SEND_CHUNK)
            self.assertEqual(enc.chunk_size, MAX_CHUNK)
            self.assertEqual(enc.encode(b"x" * 3000), [])  # dropped, as V2Ray does
            self.assertEqual(enc.dropped, 1)
            fits = MAX_CHUNK - 2 - OVERHEAD[security] - (MAX_PADDING - 1)
            if security == SEC_NONE:
                fits = MAX_CHUNK - 2 - (MAX_PADDING - 1)
            pieces = enc.encode(b"y" * fits)
            self.assertEqual(len(pieces), 1)
            self.assertLessEqual(len(pieces[0]), MAX_CHUNK)
            dec = BodyDecoder(security, OPTIONS[2], KEY, IV, packet=True)
            self.assertEqual(dec.feed(pieces[0]), [b"y" * fits])


class SequenceAndDecoder(SynchronousTestCase):
    """encode_sequence is encode in pieces; the decoder takes any split of 16 KiB chunks."""

    @FAST
    @given(security=st.sampled_from(SECURITIES), option=st.sampled_from(OPTIONS),
           writes=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1,
                           max_size=4),
           size=st.sampled_from([MAX_CHUNK, 8192, MAX_SEND_CHUNK]))
    def test_sequence_equals_encode(self, security, option, writes, size) -> None:
        a = BodyEncoder(security, option, KEY, IV, chunk_size=size, random_bytes=zero_padding)
        b = BodyEncoder(security, option, KEY, IV, chunk_size=size, random_bytes=zero_padding)
        for n in writes:
            data = os.urandom(n)
            pieces = a.encode_sequence(data)
            self.assertTrue(all(type(p) is bytes for p in pieces))  # writeSequence wants bytes
            self.assertEqual(b"".join(pieces), b"".join(b.encode(data)))
        self.assertEqual(b"".join(a.end()), b"".join(b.end()))

    @FAST
    @given(security=st.sampled_from(SECURITIES), option=st.sampled_from(OPTIONS),
           total=st.integers(min_value=1, max_value=100_000),
           cuts=st.lists(st.integers(min_value=0, max_value=120_000), max_size=12))
    def test_any_split_of_large_chunks(self, security, option, total, cuts) -> None:
        data = os.urandom(total)
        enc = BodyEncoder(security, option, KEY, IV, chunk_size=MAX_SEND_CHUNK)
        wire = b"".join(enc.encode_sequence(data)) + b"".join(enc.end())
        dec = BodyDecoder(security, option, KEY, IV)
        out = []
        last = 0
        for cut in sorted({min(c, len(wire)) for c in cuts} | {len(wire)}):
            out += dec.feed(wire[last:cut])
            last = cut
        self.assertEqual(b"".join(bytes(p) for p in out), data)
        self.assertTrue(dec.eof)
        self.assertTrue(dec.at_boundary)

    def test_partial_chunk_then_rest_byte_by_byte(self) -> None:
        enc = BodyEncoder(SEC_AES128_GCM, OPTIONS[2], KEY, IV, chunk_size=MAX_SEND_CHUNK)
        data = os.urandom(40_000)
        wire = b"".join(enc.encode_sequence(data))
        dec = BodyDecoder(SEC_AES128_GCM, OPTIONS[2], KEY, IV)
        out = dec.feed(wire[:20_000])  # one whole chunk and part of the next
        self.assertEqual(len(out), 1)
        self.assertFalse(dec.at_boundary)
        for i in range(20_000, len(wire)):
            out += dec.feed(wire[i:i + 1])
        self.assertEqual(b"".join(out), data)
        self.assertTrue(dec.at_boundary)

    def test_bytearray_input_not_kept(self) -> None:
        """The decoder copies what it keeps: the caller may reuse its buffer."""
        enc = BodyEncoder(SEC_CHACHA20_POLY1305, OPTIONS[2], KEY, IV, chunk_size=MAX_SEND_CHUNK)
        data = os.urandom(30_000)
        wire = bytearray(b"".join(enc.encode_sequence(data)))
        dec = BodyDecoder(SEC_CHACHA20_POLY1305, OPTIONS[2], KEY, IV)
        first = bytearray(wire[:10_000])
        out = dec.feed(first)
        first[:] = b"\xff" * len(first)  # scribble over the caller's buffer
        out += dec.feed(wire[10_000:])
        self.assertEqual(b"".join(out), data)


class ChunkSizeSetting(SynchronousTestCase):
    """``settings.chunkSize`` of a vmess outbound, from JSON to the chunks on the wire."""

    UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"

    def parse(self, **extra: Any):
        return parse_outbound_settings(Node({
            "vnext": [{"address": "127.0.0.1", "port": 1, "users": [{"id": self.UUID}]}],
            **extra}))

    def test_default_and_fallback(self) -> None:
        self.assertEqual(self.parse().chunk_size, 16384)
        self.assertEqual(self.parse(chunkSize=2048).chunk_size, 2048)
        self.assertEqual(self.parse(chunkSize="8192").chunk_size, 8192)

    def test_out_of_range_is_an_error(self) -> None:
        for bad in (1024, 2047, 16385, 65535, -1, "big"):
            self.assertRaises(ConfigError, self.parse, chunkSize=bad)

    def test_endpoint_refuses_a_size_outside_range(self) -> None:
        for bad in (MAX_CHUNK - 1, MAX_SEND_CHUNK + 1):
            self.assertRaises(ValueError, VMessClientEndpoint, FakeEndpoint(),
                              Account(os.urandom(16)), Destination.tcp("example.com", 80),
                              reactor=Clock(), chunk_size=bad)

    def test_outbound_hands_it_to_every_endpoint(self) -> None:
        settings = self.parse(chunkSize=2048)
        out = VMessOutbound(Clock(), "out", settings)
        for dest in (Destination.tcp("example.com", 80), Destination.udp("1.1.1.1", 53)):
            self.assertEqual(out.endpointFor(dest).chunk_size, 2048)
        self.assertEqual(out._muxCarrier().chunk_size, 2048)

    def sent_payloads(self, security: str, chunk_size: int | None, n: int) -> list[int]:
        """Payload sizes of the request chunks a client sends for one n-byte write."""
        account = Account(os.urandom(16), security=security)
        lower = FakeEndpoint()
        kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
        ep = VMessClientEndpoint(lower, account, Destination.tcp("example.com", 80),
                                 reactor=Clock(), clock=lambda: NOW, **kwargs)
        app = self.successResultOf(ep.connect(protocol.Factory.forProtocol(App)))
        data = os.urandom(n)
        app.transport.write(data)
        hs = ServerHandshake(UserTable([account]), AuthIDFilter(), SessionHistory())
        req = hs.feed(lower.transport.value(), NOW)
        self.assertIsInstance(req, RequestParsed)
        got = req.body_decoder().feed(req.leftover)
        self.assertEqual(b"".join(got), data)
        return [len(p) for p in got]

    def test_client_sends_16k_by_default_and_2048_when_asked(self) -> None:
        for security, overhead in (("aes-128-gcm", 16), ("chacha20-poly1305", 16)):
            padded = 2 + overhead + MAX_PADDING
            self.assertEqual(self.sent_payloads(security, None, 100_000)[:-1],
                             [16384 - padded] * 6)
            self.assertEqual(self.sent_payloads(security, 2048, 100_000)[0], 2048 - padded)

    def test_legacy_client_chunks(self) -> None:
        account = Account(os.urandom(16), alter_id=4, security="aes-128-gcm")
        for size, payload in ((None, 16384 - 2 - 4), (2048, 2048 - 2 - 4)):
            lower = FakeEndpoint()
            kwargs = {} if size is None else {"chunk_size": size}
            ep = VMessClientEndpoint(lower, account, Destination.tcp("example.com", 80),
                                     security=SEC_LEGACY, reactor=Clock(), clock=lambda: NOW,
                                     **kwargs)
            app = self.successResultOf(ep.connect(protocol.Factory.forProtocol(App)))
            app.transport.write(os.urandom(50_000))
            hs = ServerHandshake(UserTable([account]), AuthIDFilter(), SessionHistory())
            req = hs.feed(lower.transport.value(), NOW)
            self.assertIsInstance(req, RequestParsed)
            self.assertEqual((req.aead, req.security), (False, SEC_LEGACY))
            got = req.body_decoder().feed(req.leftover)
            self.assertEqual(len(got[0]), payload)

    def test_server_responses_are_16k_and_udp_stays_2048(self) -> None:
        account = Account(os.urandom(16), security="aes-128-gcm")
        for command, dest in ((H.CMD_TCP, Destination.tcp("example.com", 80)),
                              (H.CMD_UDP, Destination.udp("1.1.1.1", 53))):
            lower = FakeEndpoint()
            ep = VMessClientEndpoint(lower, account, dest, reactor=Clock(),
                                     clock=lambda: NOW, command=command)
            app = self.successResultOf(ep.connect(protocol.Factory.forProtocol(App)))
            app.transport.write(b"q")
            hs = ServerHandshake(UserTable([account]), AuthIDFilter(), SessionHistory())
            req = hs.feed(lower.transport.value(), NOW)
            header, enc = req.response_writer()
            expected = 16384 if command == H.CMD_TCP else 2048
            self.assertEqual(enc.chunk_size, expected)
            if command == H.CMD_TCP:
                data = os.urandom(50_000)
                lower.protocol.dataReceived(header + b"".join(enc.encode_sequence(data)))
                self.assertEqual(b"".join(app.data), data)
                self.assertTrue(default_option(req.security) & OPT_GLOBAL_PADDING)
                self.assertEqual(enc.max_payload, 16384 - 2 - 16 - MAX_PADDING)
