"""Properties of the sans-IO VMess core: round trips, corruption, truncation, replay."""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess import kdf as K
from vtwist.proxy.vmess.body import (
    OPT_CHUNK_MASKING,
    OPT_CHUNK_STREAM,
    OPT_GLOBAL_PADDING,
    SEC_AES128_GCM,
    SEC_CHACHA20_POLY1305,
    SEC_LEGACY,
    SEC_NONE,
    BodyDecoder,
    BodyEncoder,
    BodyError,
    ShakeStream,
)
from vtwist.proxy.vmess.handshake import (
    ClientSession,
    Rejected,
    RequestParsed,
    ServerHandshake,
)
from vtwist.proxy.vmess.kdf import kdf
from vtwist.proxy.vmess.legacy import LegacyAuthTable, legacy_auth
from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
from vtwist.proxy.vmess.users import Account, UserTable, resolve_security
from vtwist.sansio import NEED_DATA, Event

NOW = 1_700_000_000
SECURITIES = [SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_NONE, SEC_LEGACY]
OPTIONS = [OPT_CHUNK_STREAM,
           OPT_CHUNK_STREAM | OPT_CHUNK_MASKING,
           OPT_CHUNK_STREAM | OPT_CHUNK_MASKING | OPT_GLOBAL_PADDING,
           OPT_CHUNK_MASKING | OPT_GLOBAL_PADDING]
KEY, IV = bytes(range(16)), bytes(range(16, 32))
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _encode_all(enc: BodyEncoder, writes: list[bytes]) -> tuple[bytes, list[int]]:
    """Wire bytes and the offsets where chunks end."""
    wire = bytearray()
    bounds = []
    for w in writes:
        for piece in enc.encode(w):
            wire += piece
            bounds.append(len(wire))
    for piece in enc.end():
        wire += piece
        bounds.append(len(wire))
    return bytes(wire), bounds


def reference_kdf(key: bytes, *path: bytes) -> bytes:
    """The KDF exactly as the reference spells it: nested ``hmac`` objects."""
    def make(level: int):
        if level == 0:
            return lambda: hmac.new(b"VMess AEAD KDF", digestmod=hashlib.sha256)
        parent = make(level - 1)
        return lambda: hmac.new(path[level - 1], digestmod=parent)

    h = make(len(path))()
    h.update(key)
    return h.digest()


class KDFProperty(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=48), st.lists(st.binary(max_size=64), max_size=4))
    def test_matches_nested_hmac(self, key: bytes, path: list[bytes]) -> None:
        """The flattened SHA-256-state KDF equals the nested-HMAC definition."""
        self.assertEqual(kdf(key, *path), reference_kdf(key, *path))

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
           st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16),
           st.binary(min_size=16, max_size=16))
    def test_header_keys_match_nested_hmac(self, cmd_key: bytes, auth_id: bytes,
                                           nonce: bytes, resp_key: bytes,
                                           resp_iv: bytes) -> None:
        """The request and response header derivations (pads shared by the four labels)
        equal KDF(key, label, ...) by the nested-HMAC definition, truncated to 16/12."""
        want = (reference_kdf(cmd_key, K.HEADER_LEN_KEY, auth_id, nonce)[:16],
                reference_kdf(cmd_key, K.HEADER_LEN_NONCE, auth_id, nonce)[:12],
                reference_kdf(cmd_key, K.HEADER_PAYLOAD_KEY, auth_id, nonce)[:16],
                reference_kdf(cmd_key, K.HEADER_PAYLOAD_NONCE, auth_id, nonce)[:12])
        self.assertEqual(K.request_header_keys(cmd_key, auth_id, nonce), want)
        pads = K.request_pads(auth_id, nonce)
        self.assertEqual(K.request_length_keys(cmd_key, auth_id, nonce, pads), want[:2])
        self.assertEqual(K.request_payload_keys(cmd_key, auth_id, nonce), want[2:])
        self.assertEqual(K.response_header_keys(resp_key, resp_iv), (
            reference_kdf(resp_key, K.RESP_HEADER_LEN_KEY)[:16],
            reference_kdf(resp_iv, K.RESP_HEADER_LEN_IV)[:12],
            reference_kdf(resp_key, K.RESP_HEADER_KEY)[:16],
            reference_kdf(resp_iv, K.RESP_HEADER_IV)[:12]))


class ShakeMask(SynchronousTestCase):
    @settings(max_examples=50, deadline=None)
    @given(st.binary(min_size=16, max_size=16),
           st.lists(st.booleans(), min_size=150, max_size=700))
    def test_stream_is_shake128(self, iv: bytes, pairs: list[bool]) -> None:
        """Words and pairs read in any order are SHAKE128(iv) from its first byte on, also
        past the first block (where the stream goes on from a streaming XOF)."""
        stream = ShakeStream(iv)
        out = bytearray()
        for pair in pairs:
            if pair:
                a, b = stream.next_pair()
                out += a.to_bytes(2, "big") + b.to_bytes(2, "big")
            else:
                out += stream.next_word().to_bytes(2, "big")
        self.assertEqual(bytes(out), hashlib.shake_128(iv).digest(len(out)))


class BodyRoundTrip(SynchronousTestCase):
    """Encoder -> decoder for every security and option set, any split of the input."""

    @FAST
    @given(security=st.sampled_from(SECURITIES), option=st.sampled_from(OPTIONS),
           writes=st.lists(st.binary(min_size=1, max_size=5000), max_size=6),
           split=st.integers(min_value=1, max_value=3000))
    def test_stream_round_trip(self, security, option, writes, split) -> None:
        enc = BodyEncoder(security, option, KEY, IV)
        wire, _ = _encode_all(enc, writes)
        dec = BodyDecoder(security, option, KEY, IV)
        out = []
        for k in range(0, len(wire), split):
            out += dec.feed(wire[k:k + split])
        self.assertEqual(b"".join(bytes(x) for x in out), b"".join(writes))
        # Only ChunkStream sends an end-of-stream chunk (AEAD bodies are chunked anyway).
        self.assertEqual(dec.eof, bool(option & OPT_CHUNK_STREAM))

    @FAST
    @given(security=st.sampled_from(SECURITIES),
           option=st.sampled_from(OPTIONS[:3]),
           packets=st.lists(st.binary(min_size=1, max_size=1900), max_size=8))
    def test_packet_round_trip(self, security, option, packets) -> None:
        enc = BodyEncoder(security, option, KEY, IV, packet=True)
        dec = BodyDecoder(security, option, KEY, IV, packet=True)
        out = []
        for p in packets:
            pieces = enc.encode(p)
            self.assertLessEqual(sum(map(len, pieces)), 2048)
            out += dec.feed(b"".join(pieces))
        out += dec.feed(b"".join(enc.end()))
        self.assertEqual([bytes(x) for x in out], packets)
        self.assertTrue(dec.eof)

    def test_chunks_stay_within_2048(self) -> None:
        for security in (SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_LEGACY):
            for option in OPTIONS[:3]:
                enc = BodyEncoder(security, option, KEY, IV)
                pieces = enc.encode(os.urandom(100_000))
                self.assertTrue(all(len(p) <= 2048 for p in pieces), (security, option))

    def test_oversized_datagram_dropped(self) -> None:
        enc = BodyEncoder(SEC_AES128_GCM, OPTIONS[2], KEY, IV, packet=True)
        self.assertEqual(enc.encode(b"x" * 3000), [])
        self.assertEqual(enc.dropped, 1)
        dec = BodyDecoder(SEC_AES128_GCM, OPTIONS[2], KEY, IV, packet=True)
        self.assertEqual(dec.feed(b"".join(enc.encode(b"ok"))), [b"ok"])

    def test_global_padding_without_masking_refused(self) -> None:
        bad = OPT_CHUNK_STREAM | OPT_GLOBAL_PADDING
        for security in SECURITIES:
            self.assertRaises(BodyError, BodyEncoder, security, bad, KEY, IV)
            self.assertRaises(BodyError, BodyDecoder, security, bad, KEY, IV)


class BodyCorruption(SynchronousTestCase):
    """Any single flipped bit in a sealed chunk is detected; truncation is visible."""

    @FAST
    @given(security=st.sampled_from([SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_LEGACY]),
           option=st.sampled_from(OPTIONS[:3]),
           payload=st.binary(min_size=1, max_size=3000),
           data=st.data())
    def test_flipped_bit_in_sealed_part_detected(self, security, option, payload, data) -> None:
        enc = BodyEncoder(security, option, KEY, IV, random_bytes=lambda n: b"\0" * n)
        first = enc.encode(payload)[0]
        pad = len(first) - 2 - (min(len(payload), enc.max_payload) + (4 if security == SEC_LEGACY else 16))
        sealed_end = len(first) - pad
        bit = data.draw(st.integers(min_value=16, max_value=sealed_end * 8 - 1))
        corrupted = bytearray(first)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        dec = BodyDecoder(security, option, KEY, IV)
        with self.assertRaises(BodyError):
            dec.feed(bytes(corrupted))

    @FAST
    @given(security=st.sampled_from(SECURITIES), option=st.sampled_from(OPTIONS[:3]),
           payload=st.binary(min_size=1, max_size=6000), data=st.data())
    def test_length_bit_flip_never_yields_wrong_bytes(self, security, option, payload,
                                                      data) -> None:
        enc = BodyEncoder(security, option, KEY, IV)
        wire, _ = _encode_all(enc, [payload])
        bit = data.draw(st.integers(min_value=0, max_value=15))
        corrupted = bytearray(wire)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        dec = BodyDecoder(security, option, KEY, IV)
        try:
            out = b"".join(bytes(x) for x in dec.feed(bytes(corrupted)))
        except BodyError:
            return
        if security in (SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_LEGACY):
            # Unauthenticated lengths can only shorten or stall the stream.
            self.assertTrue(payload.startswith(out))
            self.assertFalse(out == payload and dec.eof and dec.at_boundary)

    @FAST
    @given(security=st.sampled_from(SECURITIES), option=st.sampled_from(OPTIONS[:3]),
           writes=st.lists(st.binary(min_size=1, max_size=4000), min_size=1, max_size=4),
           data=st.data())
    def test_truncation(self, security, option, writes, data) -> None:
        enc = BodyEncoder(security, option, KEY, IV)
        wire, bounds = _encode_all(enc, writes)
        cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
        dec = BodyDecoder(security, option, KEY, IV)
        out = b"".join(bytes(x) for x in dec.feed(wire[:cut]))
        self.assertTrue(b"".join(writes).startswith(out))
        # The end-of-stream chunk is recognised from its length field alone (as V2Ray does).
        eos_start = bounds[-2] if len(bounds) > 1 else 0
        if dec.eof:
            self.assertTrue(option & OPT_CHUNK_STREAM and cut >= eos_start + 2)
            self.assertEqual(out, b"".join(writes))
        else:
            self.assertEqual(dec.at_boundary, cut == 0 or cut in bounds)


def _users(n: int = 1, alter: int = 0) -> list[Account]:
    return [Account(os.urandom(16), alter_id=alter, email=f"u{i}@x") for i in range(n)]


def _server(accounts: list[Account], legacy: bool = True) -> ServerHandshake:
    return ServerHandshake(UserTable(accounts, legacy=legacy), AuthIDFilter(), SessionHistory())


destinations = st.one_of(
    st.builds(Destination.tcp, st.sampled_from(["example.com", "a-b_c.d", "x" * 255]),
              st.integers(0, 65535)),
    st.builds(lambda a, p: Destination.tcp(".".join(map(str, a)), p),
              st.lists(st.integers(0, 255), min_size=4, max_size=4), st.integers(0, 65535)),
    st.builds(lambda b, p: Destination.tcp(str(__import__("ipaddress").IPv6Address(b)), p),
              st.binary(min_size=16, max_size=16), st.integers(0, 65535)),
)


class Handshake(SynchronousTestCase):
    """Client header -> server handshake, replay, clock skew, legacy, many users."""

    @FAST
    @given(dest=destinations, security=st.sampled_from(SECURITIES), aead=st.booleans(),
           udp=st.booleans(), split=st.integers(1, 80))
    def test_round_trip(self, dest, security, aead, udp, split) -> None:
        accounts = _users(3, alter=2)
        hs = _server(accounts)
        if udp:
            dest = dest.with_network("udp")
        cs = ClientSession(accounts[1], dest, command=H.CMD_UDP if udp else H.CMD_TCP,
                           security=security, aead=aead)
        wire = cs.request_header(NOW) + b"tail"
        result = NEED_DATA
        for k in range(0, len(wire), split):
            result = hs.feed(wire[k:k + split], NOW)
            if result is not NEED_DATA:
                break
        self.assertIsInstance(result, RequestParsed)
        self.assertIsInstance(result, Event)
        self.assertEqual(result.account, accounts[1])
        self.assertEqual(result.aead, aead)
        self.assertEqual(result.destination, dest)
        self.assertTrue(b"tail".startswith(result.leftover))
        # response header both ways
        rw, _enc = result.response_writer()
        self.assertIs(cs.feed_response(rw[:-1]), NEED_DATA)
        got = cs.feed_response(rw[-1:] + b"x")
        self.assertIsNot(got, NEED_DATA)
        self.assertEqual(got[2], b"x")

    def test_replay_refused(self) -> None:
        accounts = _users()
        wire = ClientSession(accounts[0], Destination.tcp("example.com", 80)).request_header(NOW)
        self.assertIsInstance(_server(accounts).feed(wire, NOW), RequestParsed)
        hs1 = ServerHandshake(UserTable(accounts), AuthIDFilter(), SessionHistory())
        self.assertIsInstance(hs1.feed(wire, NOW), RequestParsed)
        # same filters, second time: replay
        hs2 = ServerHandshake(hs1.users, hs1.auth_filter, hs1.sessions)
        result = hs2.feed(wire, NOW)
        self.assertIsInstance(result, Rejected)
        self.assertIn("replay", result.reason)
        self.assertTrue(result.drain)

    def test_same_session_new_auth_id_refused(self) -> None:
        accounts = _users()
        table, af, sh = UserTable(accounts), AuthIDFilter(), SessionHistory()
        cs = ClientSession(accounts[0], Destination.tcp("example.com", 80))
        self.assertIsInstance(ServerHandshake(table, af, sh).feed(
            cs.request_header(NOW), NOW), RequestParsed)
        result = ServerHandshake(table, af, sh).feed(cs.request_header(NOW), NOW)
        self.assertIsInstance(result, Rejected)
        self.assertIn("duplicate session", result.reason)

    def test_clock_skew_window(self) -> None:
        accounts = _users()
        for skew, ok in ((119, True), (-119, True), (120, True), (-120, True),
                         (121, False), (125, False), (-125, False)):
            cs = ClientSession(accounts[0], Destination.tcp("example.com", 80))
            result = _server(accounts, legacy=False).feed(cs.request_header(NOW + skew), NOW)
            if ok:
                self.assertIsInstance(result, RequestParsed, skew)
            else:
                self.assertIsInstance(result, Rejected, skew)
                self.assertIn(f"clock skew of {skew:+d} s for user u0@x", result.reason)

    def test_unknown_user(self) -> None:
        result = _server(_users()).feed(os.urandom(64), NOW)
        self.assertIsInstance(result, Rejected)
        self.assertIn("unknown user", result.reason)
        self.assertEqual(result.consumed, 64)

    def test_legacy_switch_and_taint(self) -> None:
        accounts = _users(1, alter=4)
        cs = ClientSession(accounts[0], Destination.tcp("example.com", 80), aead=False)
        wire = cs.request_header(NOW)
        self.assertIsInstance(_server(accounts, legacy=False).feed(wire, NOW), Rejected)
        table, af, sh = UserTable(accounts), AuthIDFilter(), SessionHistory()
        # corrupt the checksum region: the auth entry gets tainted
        bad = bytearray(wire)
        bad[-1] ^= 1
        r = ServerHandshake(table, af, sh).feed(bytes(bad), NOW)
        self.assertIsInstance(r, Rejected)
        self.assertTrue(r.drain)
        r2 = ServerHandshake(table, af, sh).feed(wire, NOW)
        self.assertIsInstance(r2, Rejected)
        self.assertIn("unknown user", r2.reason)
        # a fresh legacy header (other timestamp) still works
        cs2 = ClientSession(accounts[0], Destination.tcp("example.com", 80), aead=False)
        wire2 = cs2.request_header(NOW, legacy_timestamp=NOW + 3)
        self.assertIsInstance(ServerHandshake(table, af, sh).feed(wire2, NOW), RequestParsed)

    def test_legacy_main_id_accepted_with_alter_id_zero(self) -> None:
        accounts = _users(1, alter=0)
        cs = ClientSession(accounts[0], Destination.tcp("example.com", 80), aead=False)
        result = _server(accounts).feed(cs.request_header(NOW), NOW)
        self.assertIsInstance(result, RequestParsed)
        self.assertFalse(result.aead)

    def test_global_padding_without_masking_rejected(self) -> None:
        accounts = _users()
        cs = ClientSession(accounts[0], Destination.tcp("example.com", 80),
                           option=OPT_CHUNK_STREAM)
        object.__setattr__(cs, "option", OPT_CHUNK_STREAM | OPT_GLOBAL_PADDING)
        result = _server(accounts).feed(cs.request_header(NOW), NOW)
        self.assertIsInstance(result, Rejected)
        self.assertIn("GlobalPadding", result.reason)

    def test_thousand_users(self) -> None:
        accounts = _users(1000)
        table = UserTable(accounts, legacy=False)
        picks = [0, 499, 999]
        start = time.perf_counter()
        for idx in picks:
            cs = ClientSession(accounts[idx], Destination.tcp("example.com", 80))
            r = ServerHandshake(table, AuthIDFilter(), SessionHistory()).feed(
                cs.request_header(NOW), NOW)
            self.assertIsInstance(r, RequestParsed)
            self.assertIs(r.account, accounts[idx])
        per = (time.perf_counter() - start) / len(picks)
        self.assertLess(per, 0.05)

    def test_resolve_security(self) -> None:
        self.assertEqual(resolve_security("aes-128-gcm"), SEC_AES128_GCM)
        self.assertEqual(resolve_security("chacha20-poly1305"), SEC_CHACHA20_POLY1305)
        self.assertEqual(resolve_security("none"), SEC_NONE)
        self.assertIn(resolve_security("auto"), (SEC_AES128_GCM, SEC_CHACHA20_POLY1305))
        self.assertEqual(resolve_security("zero"), resolve_security("auto"))
        self.assertEqual(resolve_security("legacy"), resolve_security("auto"))
        self.assertEqual(resolve_security("AES-128-GCM"), SEC_AES128_GCM)


class LegacyTable(SynchronousTestCase):
    """The legacy HMAC table follows the clock both ways and forgets expired taints."""

    def test_clock_steps_back_and_forth(self) -> None:
        u = os.urandom(16)
        t = LegacyAuthTable([[u]], window=5)
        t.update(100)
        self.assertEqual(len(t), 11)
        self.assertIsNone(t.lookup(legacy_auth(u, 92), 100))
        self.assertEqual(t.lookup(legacy_auth(u, 92), 97).timestamp, 92)  # stepped back
        self.assertIsNone(t.lookup(legacy_auth(u, 103), 97))
        self.assertEqual(t.lookup(legacy_auth(u, 105), 100).timestamp, 105)
        for now in (100, 97, 100, 130, 40, 41):
            t.update(now)
            self.assertEqual([s[0] for s in t._seconds], list(range(now - 5, now + 6)))
            self.assertEqual(len(t), 11)

    def test_taint_lasts_while_its_second_is_in_the_window(self) -> None:
        u = os.urandom(16)
        t = LegacyAuthTable([[u]], window=5)
        auth = legacy_auth(u, 98)
        self.assertIsNotNone(t.lookup(auth, 100))
        t.taint(auth)
        self.assertIsNone(t.lookup(auth, 102))
        self.assertIsNone(t.lookup(auth, 103))
        t.update(104)  # second 98 left the window, and its taint with it
        self.assertEqual(t._tainted, {})
        self.assertEqual(t.lookup(auth, 100).timestamp, 98)


class ReplayFilters(SynchronousTestCase):
    """The filters are exact and forget only what the time check already refuses."""

    def test_no_false_positives(self) -> None:
        f = AuthIDFilter()
        for _ in range(50_000):
            self.assertTrue(f.check_and_add(os.urandom(16), NOW, NOW))

    def test_remembered_until_timestamp_expires(self) -> None:
        f = AuthIDFilter()
        a = os.urandom(16)
        self.assertTrue(f.check_and_add(a, NOW - 100, NOW))
        self.assertFalse(f.check_and_add(a, NOW - 100, NOW + 10))  # ts still valid
        self.assertFalse(f.check_and_add(a, NOW - 100, NOW + 20))  # valid until ts+120
        self.assertTrue(f.check_and_add(os.urandom(16), NOW, NOW + 21))
        self.assertEqual(len(f), 1)  # the old one is gone

    def test_session_history_three_minutes(self) -> None:
        s = SessionHistory()
        self.assertTrue(s.check_and_add("x", 0))
        self.assertFalse(s.check_and_add("x", 179))
        self.assertTrue(s.check_and_add("x", 181))

    def test_capacity_fails_closed(self) -> None:
        f = AuthIDFilter(capacity=2)
        self.assertTrue(f.check_and_add(b"a" * 16, NOW, NOW))
        self.assertTrue(f.check_and_add(b"b" * 16, NOW, NOW))
        self.assertFalse(f.check_and_add(b"c" * 16, NOW, NOW))
