"""Trojan's sans-IO codec: requests, UDP packet framing, the server's first-read decision;
and the settings parser (V2Ray 4.34's JSON, its errors)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.proxy.trojan import codec as C
from vtwist.proxy.trojan.settings import parse_inbound_settings, parse_outbound_settings
from vtwist.sansio import NEED_DATA

KEY = C.password_key("secret")

domains = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){1,2}",
                        fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
hosts = st.one_of(domains, ipv4, ipv6)
ports = st.integers(0, 65535)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


class RequestTests(SynchronousTestCase):
    def test_key_is_hex_sha224(self) -> None:
        self.assertEqual(C.password_key("secret"),
                         hashlib.sha224(b"secret").hexdigest().encode())
        self.assertEqual(len(KEY), 56)

    def test_known_bytes(self) -> None:
        """The layout 4.34's ConnWriter writes, byte for byte."""
        got = C.encode_request(KEY, C.CMD_TCP, Destination.tcp("example.com", 443))
        self.assertEqual(got, KEY + b"\r\n\x01\x03\x0bexample.com\x01\xbb\r\n")
        got = C.encode_request(KEY, C.CMD_UDP, Destination.udp("1.2.3.4", 53))
        self.assertEqual(got, KEY + b"\r\n\x03\x01\x01\x02\x03\x04\x00\x35\r\n")

    @given(hosts, ports, st.sampled_from([C.CMD_TCP, C.CMD_UDP]), st.binary(max_size=64),
           st.lists(st.integers(0, 200), max_size=4))
    def test_round_trip_in_pieces(self, host: str, port: int, command: int, payload: bytes,
                                  cuts: list[int]) -> None:
        network = "udp" if command == C.CMD_UDP else "tcp"
        dest = Destination(network, host, port)  # type: ignore[arg-type]
        wire = C.encode_request(KEY, command, dest) + payload
        reader = C.RequestReader({KEY: "user"})
        results = [reader.feed(piece) for piece in _splits(wire, cuts)]
        final = [r for r in results if r is not NEED_DATA]
        self.assertEqual(len(final), 1, results)
        accepted = final[0]
        self.assertIsInstance(accepted, C.Accepted)
        self.assertEqual((accepted.user, accepted.command, accepted.destination),
                         ("user", command, dest))
        tail = b"".join(_splits(wire, cuts)[results.index(accepted) + 1:])
        self.assertEqual(accepted.leftover + tail, payload)

    def test_other_commands_are_tcp_as_in_434(self) -> None:
        wire = KEY + b"\r\n\x02\x01\x7f\x00\x00\x01\x00\x50\r\n"
        r = C.parse_request(wire)
        self.assertEqual(r.destination, Destination.tcp("127.0.0.1", 80))
        self.assertEqual(r.command, 2)


class FirstReadTests(SynchronousTestCase):
    def reader(self) -> C.RequestReader:
        return C.RequestReader({KEY: "user"})

    def test_http_request_is_not_trojan_at_once(self) -> None:
        got = self.reader().feed(b"GET / HTTP/1.1\r\n")
        self.assertIsInstance(got, C.NotTrojan)

    def test_wrong_password_is_not_trojan(self) -> None:
        wire = C.encode_request(C.password_key("wrong"), 1, Destination.tcp("a.com", 1))
        got = self.reader().feed(wire)
        self.assertEqual(got, C.NotTrojan("not a valid user"))

    def test_short_prefix_of_a_key_waits(self) -> None:
        r = self.reader()
        self.assertIs(r.feed(KEY[:20]), NEED_DATA)
        self.assertIs(r.feed(KEY[20:] + b"\r"), NEED_DATA)
        self.assertEqual(r.buffered, KEY + b"\r")

    def test_short_non_prefix_falls_back(self) -> None:
        other = C.password_key("other")
        self.assertIsInstance(self.reader().feed(other[:10]), C.NotTrojan)

    def test_no_cr_after_key(self) -> None:
        self.assertIsInstance(self.reader().feed(KEY + b"xx" + b"\x01" * 10), C.NotTrojan)

    def test_known_key_broken_address_is_malformed(self) -> None:
        got = self.reader().feed(KEY + b"\r\n\x01\x09" + b"\x00" * 8)
        self.assertIsInstance(got, C.Malformed)
        got = self.reader().feed(KEY + b"\r\n\x01\x01\x7f\x00\x00\x01\x00\x50XX")
        self.assertIsInstance(got, C.Malformed)

    @given(st.binary(max_size=300))
    def test_random_bytes_never_raise(self, data: bytes) -> None:
        reader = self.reader()
        for piece in (data[:7], data[7:70], data[70:]):
            got = reader.feed(piece)
            if got is not NEED_DATA:
                self.assertIsInstance(got, (C.NotTrojan, C.Malformed, C.Accepted))
                break


class PacketTests(SynchronousTestCase):
    def test_known_bytes(self) -> None:
        """4.34's PacketWriter: address, port, length, CRLF, payload."""
        got = C.encode_packet(Destination.udp("127.0.0.1", 53), b"abc")
        self.assertEqual(got, b"\x01\x7f\x00\x00\x01\x00\x35\x00\x03\r\nabc")

    @given(st.lists(st.tuples(hosts, ports, st.binary(max_size=3000)), max_size=5),
           st.lists(st.integers(0, 20000), max_size=5))
    def test_round_trip_in_pieces(self, packets: list[tuple[str, int, bytes]],
                                  cuts: list[int]) -> None:
        wire = b"".join(C.encode_packet(Destination.udp(h, p), d) for h, p, d in packets)
        decoder = C.PacketDecoder()
        got = [pk for piece in _splits(wire, cuts) for pk in decoder.feed(piece)]
        self.assertEqual([(pk.destination, pk.payload) for pk in got],
                         [(Destination.udp(h, p), d) for h, p, d in packets])
        self.assertEqual(decoder.buffered, 0)

    def test_large_payload_is_split(self) -> None:
        wire = C.encode_packet(Destination.udp("1.1.1.1", 1), b"x" * 20000)
        got = C.PacketDecoder().feed(wire)
        self.assertEqual([len(p.payload) for p in got], [8192, 8192, 3616])

    def test_oversize_and_bad_crlf(self) -> None:
        head = b"\x01\x01\x01\x01\x01\x00\x01"
        with self.assertRaises(C.TrojanError):
            C.PacketDecoder().feed(head + b"\x20\x01\r\n")
        with self.assertRaises(C.TrojanError):
            C.PacketDecoder().feed(head + b"\x00\x01ab")
        with self.assertRaises(C.TrojanError):
            C.PacketDecoder().feed(b"\x07" + b"\x00" * 12)


def _node(value: object) -> Node:
    def warn(msg: str) -> None:
        raise AssertionError(f"warning: {msg}")

    return Node(value, "settings", warn)


class SettingsTests(SynchronousTestCase):
    def test_inbound(self) -> None:
        s = parse_inbound_settings(_node({
            "clients": [{"password": "a", "email": "A@x", "level": 1}, {"password": "b"}],
            "fallbacks": [{"dest": 80}, {"alpn": "h2", "path": "/p", "dest": "a.b:81",
                                         "xver": 2}]}))
        self.assertEqual([(u.password, u.email, u.level) for u in s.clients],
                         [("a", "A@x", 1), ("b", "", 0)])
        self.assertEqual(s.clients[0].key, C.password_key("a"))
        self.assertEqual([(f.alpn, f.path, f.dest, f.xver) for f in s.fallbacks],
                         [("", "", "127.0.0.1:80", 0), ("h2", "/p", "a.b:81", 2)])

    def test_inbound_errors(self) -> None:
        with self.assertRaises(ConfigError) as e:
            parse_inbound_settings(_node({"fallback": {"dest": 80}}))
        self.assertIn("fallbacks", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            parse_inbound_settings(_node({"clients": [{"password": "a", "email": "x@y"},
                                                      {"password": "b", "email": "X@Y"}]}))
        self.assertIn("settings.clients[1].email", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            parse_inbound_settings(_node({"fallbacks": [{"dest": 80, "path": "p"}]}))
        self.assertIn("fallbacks[0]", str(e.exception))

    def test_outbound(self) -> None:
        s = parse_outbound_settings(_node({"servers": [
            {"address": "[::1]", "port": 443, "password": "pw", "email": "e", "level": 2}]}))
        (server,) = s.servers
        self.assertEqual((server.address, server.port, server.user.password,
                          server.user.email, server.user.level), ("::1", 443, "pw", "e", 2))

    def test_outbound_errors(self) -> None:
        cases = [({"servers": []}, "0 Trojan server"),
                 ({"servers": [{"port": 1, "password": "p"}]}, "address"),
                 ({"servers": [{"address": "a", "port": 0, "password": "p"}]}, "port"),
                 ({"servers": [{"address": "a", "port": 1}]}, "password")]
        for value, words in cases:
            with self.assertRaises(ConfigError) as e:
                parse_outbound_settings(_node(value))
            self.assertIn(words, str(e.exception))
