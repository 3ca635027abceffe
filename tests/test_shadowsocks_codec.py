"""Shadowsocks AEAD codec: known answers, round trips, bad input, the request, the salt filter.

The known answers are computed here independently of the codec (MD5 chain, RFC 5869 HKDF
written with :mod:`hmac`, nonces and length fields built by hand) from SIP004 and V2Ray
4.34's ``proxy/shadowsocks/config.go`` / ``common/crypto``; the pinned hex vectors guard
against drift and were checked against V2Ray 4.34 by the interop suite.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.shadowsocks.aead import (
    ALIASES,
    MAX_PAYLOAD,
    Account,
    CipherError,
    StreamDecoder,
    StreamEncoder,
    evp_bytes_to_key,
    method_for,
    open_packet,
    seal_packet,
    subkey,
)
from vtwist.proxy.shadowsocks.codec import (
    Accepted,
    ClientStream,
    Refused,
    RequestError,
    ServerHandshake,
    decode_address,
    decode_packet,
    encode_packet,
)
from vtwist.proxy.shadowsocks.replay import SaltFilter
from vtwist.sansio import NEED_DATA

AEAD_METHODS = ("aes-128-gcm", "aes-256-gcm", "chacha20-poly1305")
ALL_METHODS = (*AEAD_METHODS, "none")


def _hkdf_sha1(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with SHA-1, written out."""
    prk = hmac.new(salt, ikm, hashlib.sha1).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((i,)), hashlib.sha1).digest()
        out += block
        i += 1
    return out[:length]


def _nonce(n: int) -> bytes:
    return n.to_bytes(12, "little")


class KnownAnswers(SynchronousTestCase):
    def test_evp_bytes_to_key(self) -> None:
        # first block MD5(password), then MD5(previous || password)
        self.assertEqual(evp_bytes_to_key(b"test", 16).hex(), "098f6bcd4621d373cade4e832627b4f6")
        first = hashlib.md5(b"test").digest()
        second = hashlib.md5(first + b"test").digest()
        self.assertEqual(evp_bytes_to_key(b"test", 32), first + second)
        self.assertEqual(evp_bytes_to_key(b"test", 32).hex(),
                         "098f6bcd4621d373cade4e832627b4f60a9172716ae6428409885b8b829ccb05")

    def test_hkdf_rfc5869_shape(self) -> None:
        # RFC 5869 test case 4 (SHA-1) checks the hand-written HKDF used below.
        okm = _hkdf_sha1(bytes([0x0b] * 11), bytes(range(13)), bytes(range(0xf0, 0xfa)), 42)
        self.assertEqual(okm.hex(), "085a01ea1b10f36933068b56efa5ad81a4f14b822f5b091568a9"
                                    "cdd4f155fda2c22e422478d305f3f896")

    def test_subkey(self) -> None:
        for size in (16, 32):
            key = evp_bytes_to_key(b"password", size)
            salt = bytes(range(size))
            self.assertEqual(subkey(key, salt), _hkdf_sha1(key, salt, b"ss-subkey", size))

    def test_first_chunk_fixed_salt(self) -> None:
        """salt || AEAD_k(n0, BE16 len) || AEAD_k(n1, payload), k the salt's subkey."""
        for name, cls in (("aes-128-gcm", AESGCM), ("aes-256-gcm", AESGCM),
                          ("chacha20-poly1305", ChaCha20Poly1305)):
            account = Account.from_password(name, "password")
            size = account.method.key_size
            salt = bytes([0x5a]) * size
            payload = b"\x03\x0bexample.com\x01\xbbGET / HTTP/1.1\r\n"
            wire = b"".join(StreamEncoder(account, salt).encode(payload))
            aead = cls(_hkdf_sha1(evp_bytes_to_key(b"password", size), salt, b"ss-subkey",
                                  size))
            expected = (salt + aead.encrypt(_nonce(0), struct.pack(">H", len(payload)), None)
                        + aead.encrypt(_nonce(1), payload, None))
            self.assertEqual(wire, expected, name)
        pinned = b"".join(StreamEncoder(Account.from_password("aes-128-gcm", "password"),
                                        bytes(16)).encode(b"\x01\x7f\x00\x00\x01\x00\x50"))
        self.assertEqual(pinned.hex(), _pinned_aes128)

    def test_nonce_counts_little_endian(self) -> None:
        """The 257th chunk's nonces are 512 and 513: carries go into the second byte."""
        account = Account.from_password("aes-128-gcm", "k")
        enc = StreamEncoder(account, bytes(16))
        for _ in range(256):
            enc.encode(b"x")
        wire = b"".join(enc.encode(b"y"))
        aead = AESGCM(subkey(account.key, bytes(16)))
        self.assertEqual(aead.decrypt(bytes([0, 2]) + bytes(10), wire[:18], None), b"\x00\x01")
        self.assertEqual(aead.decrypt(bytes([1, 2]) + bytes(10), wire[18:], None), b"y")

    def test_udp_packet_fixed_salt(self) -> None:
        account = Account.from_password("chacha20-poly1305", "pw")
        salt = bytes(range(32))
        packet = encode_packet(account, Destination.udp("8.8.8.8", 53), b"query", salt)
        aead = ChaCha20Poly1305(_hkdf_sha1(evp_bytes_to_key(b"pw", 32), salt, b"ss-subkey", 32))
        self.assertEqual(packet, salt + aead.encrypt(bytes(12),
                                                     b"\x01\x08\x08\x08\x08\x00\x35query", None))

    def test_none_is_plain(self) -> None:
        account = Account.from_password("plain", "pw")
        self.assertEqual(account.method.name, "none")
        self.assertEqual(b"".join(StreamEncoder(account).encode(b"abc")), b"abc")
        self.assertEqual(encode_packet(account, Destination.udp("1.2.3.4", 5), b"x"),
                         b"\x01\x01\x02\x03\x04\x00\x05x")

    def test_aliases(self) -> None:
        for alias, name in ALIASES.items():
            self.assertEqual(method_for(alias.upper()).name, name)  # type: ignore[union-attr]
        for stream_cipher in ("aes-256-cfb", "rc4-md5", "chacha20", "salsa20", ""):
            self.assertIsNone(method_for(stream_cipher))


#: aes-128-gcm, password "password", salt 16 zero bytes, plaintext 127.0.0.1:80
_pinned_aes128 = ("00000000000000000000000000000000"
                  "cec6818674ee11f4547dd60c016f92d3d405"
                  "08ee204b29c3d44890d1e28b44079b304256328982cf98")


class RoundTrips(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(ALL_METHODS), st.lists(st.binary(max_size=40000), max_size=6),
           st.integers(1, 70000))
    def test_stream(self, name: str, writes: list[bytes], cut: int) -> None:
        account = Account.from_password(name, "pw")
        enc, dec = StreamEncoder(account), StreamDecoder(account)
        wire = b"".join(b"".join(enc.encode(w)) for w in writes)
        got = []
        for i in range(0, len(wire), cut):
            got += dec.feed(wire[i:i + cut])
        self.assertEqual(b"".join(got), b"".join(writes))
        self.assertTrue(dec.at_boundary)
        self.assertFalse(dec.eof)

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(ALL_METHODS), st.binary(max_size=2000),
           st.one_of(st.ip_addresses().map(str),
                     st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,3}", fullmatch=True)),
           st.integers(0, 65535))
    def test_packet(self, name: str, payload: bytes, host: str, port: int) -> None:
        account = Account.from_password(name, "pw")
        dest = Destination.udp(host, port)
        packet = decode_packet(account, encode_packet(account, dest, payload))
        self.assertEqual((packet.host, packet.port, packet.payload),
                         (dest.host, dest.port, payload))

    @settings(max_examples=40, deadline=None)
    @given(st.sampled_from(ALL_METHODS), st.binary(max_size=5000), st.integers(1, 300))
    def test_request(self, name: str, payload: bytes, cut: int) -> None:
        account = Account.from_password(name, "pw")
        client = ClientStream(account, Destination.tcp("example.com", 443))
        wire = b"".join(client.encode(payload)) if payload else b"".join(client.encode(b""))
        hs = ServerHandshake(account, SaltFilter())
        result = NEED_DATA
        fed = 0
        while result is NEED_DATA and fed < len(wire):
            result = hs.feed(wire[fed:fed + cut])
            fed += cut
        self.assertIsInstance(result, Accepted)
        assert isinstance(result, Accepted)
        rest = result.decoder.feed(wire[fed:]) if fed < len(wire) else []
        self.assertEqual((result.host, result.port), ("example.com", 443))
        self.assertEqual(b"".join(result.early + rest), payload)

    def test_large_write_is_cut_at_0x3fff(self) -> None:
        account = Account.from_password("aes-256-gcm", "pw")
        wire = StreamEncoder(account, bytes(32)).encode(bytes(MAX_PAYLOAD * 2 + 1))
        # salt, then (length, payload) pairs
        self.assertEqual([len(p) for p in wire],
                         [32, 18, MAX_PAYLOAD + 16, 18, MAX_PAYLOAD + 16, 18, 17])


class BadInput(SynchronousTestCase):
    def setUp(self) -> None:
        self.account = Account.from_password("aes-128-gcm", "pw")

    def test_bad_length_tag(self) -> None:
        wire = bytearray(b"".join(StreamEncoder(self.account).encode(b"hello")))
        wire[17] ^= 1
        with self.assertRaises(CipherError):
            StreamDecoder(self.account).feed(wire)

    def test_bad_payload_tag(self) -> None:
        wire = bytearray(b"".join(StreamEncoder(self.account).encode(b"hello")))
        wire[-1] ^= 1
        dec = StreamDecoder(self.account)
        self.assertRaises(CipherError, dec.feed, wire)

    def test_length_above_limit(self) -> None:
        salt = bytes(16)
        aead = AESGCM(subkey(self.account.key, salt))
        wire = salt + aead.encrypt(_nonce(0), b"\x40\x00", None)
        self.assertRaises(CipherError, StreamDecoder(self.account).feed, wire)

    def test_zero_length_is_end_of_stream(self) -> None:
        """As V2Ray 4.34's reader: a chunk of length 0 ends the stream."""
        salt = bytes(16)
        aead = AESGCM(subkey(self.account.key, salt))
        wire = b"".join(StreamEncoder(self.account, salt).encode(b"hi")) + \
            aead.encrypt(_nonce(2), b"\x00\x00", None) + b"trailing"
        dec = StreamDecoder(self.account)
        self.assertEqual(dec.feed(wire), [b"hi"])
        self.assertTrue(dec.eof)
        self.assertEqual(dec.feed(b"more"), [])

    def test_packet_errors(self) -> None:
        self.assertRaises(CipherError, open_packet, self.account, bytes(31))
        packet = bytearray(seal_packet(self.account, b"\x01\x01\x02\x03\x04\x00\x05x"))
        packet[20] ^= 1
        self.assertRaises(RequestError, decode_packet, self.account, bytes(packet))
        self.assertRaises(RequestError, decode_packet, self.account,
                          seal_packet(self.account, b"\x01\x01\x02"))
        self.assertRaises(RequestError, decode_packet, self.account,
                          seal_packet(self.account, b"\x09\x01\x02\x03\x04\x00\x05x"))

    def test_address_type_high_bits_ignored(self) -> None:
        """V2Ray 4.34 masks ATYP with 0x0F (the old one-time-auth flag is 0x10)."""
        self.assertEqual(decode_address(b"\x11\x7f\x00\x00\x01\x00\x50rest"),
                         ("127.0.0.1", 80, 7))
        self.assertIs(decode_address(b"\x03\x0bexample"), NEED_DATA)
        self.assertRaises(RequestError, decode_address, b"\x02abc")

    def test_handshake_refusals(self) -> None:
        salts = SaltFilter()
        good = b"".join(ClientStream(self.account, Destination.tcp("1.2.3.4", 80))
                        .encode(b"payload"))
        self.assertIsInstance(ServerHandshake(self.account, salts).feed(good), Accepted)
        replay = ServerHandshake(self.account, salts).feed(good)
        self.assertEqual(replay, Refused("replayed salt"))
        other = Account.from_password("aes-128-gcm", "another password")
        self.assertIsInstance(ServerHandshake(other, salts).feed(good), Refused)
        bad_atyp = b"".join(StreamEncoder(self.account).encode(b"\x05abcdefg"))
        self.assertIsInstance(ServerHandshake(self.account, salts).feed(bad_atyp), Refused)
        self.assertIs(ServerHandshake(self.account, salts).feed(good[:40]), NEED_DATA)
        none = Account.from_password("none", "x")
        self.assertIsInstance(ServerHandshake(none).feed(b"\x00junk"), Refused)
        self.assertIsInstance(ServerHandshake(none).feed(b"\x01\x7f\x00\x00\x01\x00\x50"),
                              Accepted)

    def test_unauthenticated_salt_not_remembered(self) -> None:
        salts = SaltFilter()
        ServerHandshake(self.account, salts).feed(os.urandom(100))
        self.assertEqual(len(salts), 0)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400))
    def test_random_input_never_raises(self, data: bytes) -> None:
        for name in ALL_METHODS:
            account = Account.from_password(name, "pw")
            result = ServerHandshake(account, SaltFilter()).feed(data)
            self.assertTrue(result is NEED_DATA or isinstance(result, (Accepted, Refused)))
            # salt, then the sealed 2-byte length: enough to refuse random bytes
            if name != "none" and len(data) >= account.method.salt_size + 2 + 16:
                self.assertIsInstance(result, Refused)


class Salts(SynchronousTestCase):
    def test_rotation_bounds_memory(self) -> None:
        f = SaltFilter(capacity=3)
        for i in range(3):
            self.assertTrue(f.check(bytes([i])))
        self.assertFalse(f.check(b"\x00"))
        self.assertTrue(f.check(b"\x03"))  # rotates: 0,1,2 become the previous set
        self.assertFalse(f.check(b"\x01"))
        for i in range(4, 7):
            f.check(bytes([i]))  # second rotation drops 0,1,2
        self.assertTrue(f.check(b"\x00"))
        self.assertLessEqual(len(f), 6)
