"""The sans-IO SOCKS codec: hypothesis round trips, split input, and every error path."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.socks import codec
from vtwist.proxy.socks.codec import (
    CMD_BIND,
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    METHOD_NO_ACCEPTABLE,
    METHOD_NO_AUTH,
    METHOD_PASSWORD,
    AuthResult,
    Credentials,
    Greeting,
    LocalProtocolError,
    MethodChoice,
    ProtocolError,
    Reply,
    ReplyCode,
    Request,
    ServerCodec,
    State,
)
from vtwist.sansio import Event

DOMAIN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."

ipv4s = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6s = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)).filter(
    lambda h: ipaddress.IPv6Address(h).ipv4_mapped is None)
domains = st.text(DOMAIN_CHARS, min_size=1, max_size=255).filter(
    lambda d: codec.parse_ip(d) is None)
hosts = st.one_of(ipv4s, ipv6s, domains)
ports = st.integers(0, 65535)
byte_strings = st.binary(min_size=0, max_size=255)


def split_points(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary places."""
    return st.lists(st.integers(0, len(data)), max_size=6).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)],
                                                strict=True)])


def feed(conn: ServerCodec, pieces: list[bytes]) -> list[object]:
    events: list[object] = []
    for piece in pieces:
        events.extend(conn.receive_data(piece))
    return events


class AddressRoundTrip(SynchronousTestCase):
    @given(hosts, ports)
    def test_encode_decode(self, host: str, port: int) -> None:
        wire = codec.encode_address(host, port)
        self.assertEqual(codec.decode_address(wire), (host, port, len(wire)))
        # Every proper prefix is "incomplete", never an error or a wrong answer.
        for i in range(len(wire)):
            self.assertIs(codec.decode_address(wire[:i]), codec.NEED_DATA)

    @given(st.binary(min_size=4, max_size=4), ports)
    def test_ipv4_decoded_as_ipaddress_spells_it(self, raw: bytes, port: int) -> None:
        wire = b"\x01" + raw + port.to_bytes(2, "big")
        for view in (wire, bytearray(wire), memoryview(wire)):
            self.assertEqual(codec.decode_address(view),
                             (str(ipaddress.IPv4Address(raw)), port, 7))

    def test_encoded_ips_cached_and_bounded(self) -> None:
        """IP literals' address bytes are kept (a reply's BND.ADDR repeats), each port still
        its own; the cache is cleared when full."""
        self.patch(codec, "_ENCODED_IPS", {})
        self.patch(codec, "_IP_CACHE_SIZE", 3)
        self.assertEqual(codec.encode_address("10.0.0.1", 1), b"\x01\x0a\x00\x00\x01\x00\x01")
        self.assertEqual(codec.encode_address("10.0.0.1", 2), b"\x01\x0a\x00\x00\x01\x00\x02")
        self.assertEqual(codec.encode_address("::1", 3), b"\x04" + b"\x00" * 15 + b"\x01\x00\x03")
        codec.encode_address("example.com", 4)  # names are not kept
        self.assertEqual(sorted(codec._ENCODED_IPS), ["10.0.0.1", "::1"])
        codec.encode_address("10.0.0.2", 5)
        codec.encode_address("10.0.0.3", 6)  # full: cleared, then this one
        self.assertEqual(list(codec._ENCODED_IPS), ["10.0.0.3"])

    def test_domain_that_is_an_ip(self) -> None:
        """A domain spelling an IP literal is that IP, as in V2Ray (curl --socks5-hostname)."""
        wire = b"\x03\x09127.0.0.1\x00\x50"
        self.assertEqual(codec.decode_address(wire), ("127.0.0.1", 80, len(wire)))
        wire = b"\x03\x05[::1]\x00\x50"
        self.assertEqual(codec.decode_address(wire)[0], "::1")

    def test_mapped_ipv6_is_ipv4(self) -> None:
        wire = codec.encode_address("::ffff:10.0.0.1", 1)
        self.assertEqual(codec.decode_address(wire)[0], "10.0.0.1")

    def test_bad_addresses(self) -> None:
        with self.assertRaises(codec.AddressError) as e:
            codec.decode_address(b"\x02\x00\x00\x00\x00\x00\x00")
        self.assertEqual(e.exception.code, ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED)
        for bad in (b"", b"a b", b"\xff\xfe", b"evil\x00host", b"x/y"):
            with self.assertRaises(codec.AddressError) as e:
                codec.decode_address(bytes((3, len(bad))) + bad + b"\x00\x01")
            self.assertEqual(e.exception.code, ReplyCode.GENERAL_FAILURE)

    def test_domain_too_long_to_encode(self) -> None:
        self.assertRaises(ValueError, codec.encode_address, "a" * 256, 1)


class Socks5RoundTrip(SynchronousTestCase):
    @settings(max_examples=200)
    @given(st.data(), st.sampled_from([CMD_CONNECT, CMD_BIND, CMD_UDP_ASSOCIATE, 0x09]),
           hosts, ports, st.lists(st.integers(0, 255), min_size=1, max_size=255,
                                  unique=True), st.binary(max_size=64))
    def test_no_auth_request(self, data: st.DataObject, command: int, host: str, port: int,
                             methods: list[int], payload: bytes) -> None:
        """Greeting + request + early payload, in any split, give the same events."""
        wire = codec.client_greeting(tuple(methods)) + codec.client_request(command, host, port)
        pieces = data.draw(split_points(wire + payload))
        conn = ServerCodec()
        events: list[object] = []
        for piece in pieces:
            events.extend(conn.receive_data(piece))
            if conn.state is State.METHOD:
                self.assertEqual(conn.send(MethodChoice(METHOD_NO_AUTH)), b"\x05\x00")
                events.extend(conn.receive_data(b""))
        self.assertEqual(events, [Greeting(tuple(methods)), Request(5, command, host, port)])
        self.assertTrue(all(isinstance(e, Event) for e in events))
        self.assertIs(conn.state, State.REPLY)
        reply = conn.send(Reply(ReplyCode.SUCCEEDED, host, port))
        self.assertEqual(codec.parse_reply(reply), (0, host, port, len(reply)))
        self.assertIs(conn.state, State.ESTABLISHED)
        self.assertEqual(conn.take_trailing_data(), payload)

    @given(st.data(), st.binary(min_size=0, max_size=255), st.binary(max_size=255), hosts, ports)
    def test_password_auth(self, data: st.DataObject, user: bytes, password: bytes, host: str,
                           port: int) -> None:
        wire = codec.client_credentials(user, password) + codec.client_request(1, host, port)
        conn = ServerCodec()
        self.assertEqual(conn.receive_data(codec.client_greeting((0, 2))), [Greeting((0, 2))])
        self.assertEqual(conn.send(MethodChoice(METHOD_PASSWORD)), b"\x05\x02")
        events = feed(conn, data.draw(split_points(wire)))
        self.assertEqual(events, [Credentials(user, password)])
        self.assertEqual(conn.send(AuthResult(True)), b"\x01\x00")
        self.assertEqual(conn.receive_data(b""), [Request(5, 1, host, port)])

    @given(st.sampled_from(list(ReplyCode)), hosts, ports)
    def test_reply_round_trip(self, code: ReplyCode, host: str, port: int) -> None:
        conn = ServerCodec()
        conn.receive_data(codec.client_greeting())
        conn.send(MethodChoice(METHOD_NO_AUTH))
        conn.receive_data(codec.client_request(1, "example.com", 80))
        wire = conn.send(Reply(code, host, port))
        self.assertEqual(codec.parse_reply(wire), (int(code), host, port, len(wire)))
        for i in range(len(wire)):  # a client reading the reply: every prefix asks for more
            self.assertIs(codec.parse_reply(wire[:i]), codec.NEED_DATA)
        self.assertIs(conn.state, State.ESTABLISHED if code == 0 else State.CLOSED)

    def test_request_destination(self) -> None:
        self.assertEqual(Request(5, CMD_CONNECT, "::1", 443).destination,
                         Destination("tcp", "::1", 443))
        self.assertEqual(Request(5, CMD_UDP_ASSOCIATE, "0.0.0.0", 0).destination,
                         Destination("udp", "0.0.0.0", 0))


class Socks4RoundTrip(SynchronousTestCase):
    @given(st.data(), st.sampled_from([CMD_CONNECT, CMD_BIND]), st.one_of(ipv4s, domains),
           ports, st.binary(max_size=64).filter(lambda b: b"\x00" not in b),
           st.binary(max_size=32))
    def test_request(self, data: st.DataObject, command: int, host: str, port: int,
                     userid: bytes, payload: bytes) -> None:
        if host.startswith("0."):
            host = "1" + host[1:]  # a 0.x.x.x address means SOCKS4a, as in V2Ray
        if not codec.parse_ip(host) and len(host) > codec.MAX_SOCKS4_DOMAIN:
            host = host[:codec.MAX_SOCKS4_DOMAIN]
        wire = codec.client_request4(command, host, port, userid) + payload
        conn = ServerCodec()
        events = feed(conn, data.draw(split_points(wire)))
        self.assertEqual(events, [Request(4, command, host, port, userid)])
        reply = conn.send(Reply(ReplyCode.SUCCEEDED))
        self.assertEqual(codec.parse_reply4(reply), (90, "0.0.0.0", 0))
        self.assertIs(codec.parse_reply4(reply[:7]), codec.NEED_DATA)
        self.assertEqual(conn.take_trailing_data(), payload)

    def test_rejected_reply(self) -> None:
        conn = ServerCodec()
        conn.receive_data(codec.client_request4(1, "10.1.2.3", 80))
        self.assertEqual(conn.send(Reply(ReplyCode.CONNECTION_REFUSED)), b"\x00\x5b" + b"\x00" * 6)
        self.assertIs(conn.state, State.CLOSED)

    def test_userid_too_long(self) -> None:
        conn = ServerCodec()
        with self.assertRaises(ProtocolError) as e:
            conn.receive_data(b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 2000)
        self.assertEqual(e.exception.reply[:2], b"\x00\x5b")
        self.assertIs(conn.state, State.CLOSED)

    def test_domain_too_long(self) -> None:
        conn = ServerCodec()
        with self.assertRaises(ProtocolError) as e:
            conn.receive_data(b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00" + b"d" * 300)
        self.assertEqual(e.exception.reply[:2], b"\x00\x5b")

    def test_bad_domain(self) -> None:
        conn = ServerCodec()
        with self.assertRaises(ProtocolError):
            conn.receive_data(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a b\x00")

    def test_socks4_disabled(self) -> None:
        with self.assertRaises(ProtocolError):
            ServerCodec(allow_socks4=False).receive_data(codec.client_request4(1, "1.2.3.4", 1))


class Errors(SynchronousTestCase):
    def test_unknown_version_on_first_byte(self) -> None:
        for first in (b"G", b"\x00", b"\x16", b"\xff"):
            conn = ServerCodec()
            with self.assertRaises(ProtocolError) as e:
                conn.receive_data(first)
            self.assertEqual(e.exception.reply, b"")
            self.assertIs(conn.state, State.CLOSED)

    def test_no_methods(self) -> None:
        with self.assertRaises(ProtocolError) as e:
            ServerCodec().receive_data(b"\x05\x00")
        self.assertEqual(e.exception.reply, b"\x05\xff")

    def test_refuse_method(self) -> None:
        conn = ServerCodec()
        conn.receive_data(b"\x05\x01\x00")
        self.assertEqual(conn.send(MethodChoice(METHOD_NO_ACCEPTABLE)), b"\x05\xff")
        self.assertIs(conn.state, State.CLOSED)

    def test_auth_failure(self) -> None:
        conn = ServerCodec()
        conn.receive_data(b"\x05\x01\x02")
        conn.send(MethodChoice(METHOD_PASSWORD))
        conn.receive_data(codec.client_credentials(b"u", b"p"))
        self.assertEqual(conn.send(AuthResult(False)), b"\x01\x01")
        self.assertIs(conn.state, State.CLOSED)

    def test_auth_wrong_subnegotiation_version(self) -> None:
        conn = ServerCodec()
        conn.receive_data(b"\x05\x01\x02")
        conn.send(MethodChoice(METHOD_PASSWORD))
        with self.assertRaises(ProtocolError) as e:
            conn.receive_data(b"\x05\x01u\x01p")
        self.assertEqual(e.exception.reply, b"\x01\x01")

    def _at_request(self) -> ServerCodec:
        conn = ServerCodec()
        conn.receive_data(b"\x05\x01\x00")
        conn.send(MethodChoice(METHOD_NO_AUTH))
        return conn

    def test_request_wrong_version(self) -> None:
        with self.assertRaises(ProtocolError) as e:
            self._at_request().receive_data(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
        self.assertEqual(e.exception.reply[:2], b"\x05\x01")

    def test_request_reserved_byte_ignored(self) -> None:
        """Like V2Ray, the reserved byte is not checked."""
        self.assertEqual(self._at_request().receive_data(b"\x05\x01\x07\x01\x7f\x00\x00\x01\x00\x50"),
                         [Request(5, 1, "127.0.0.1", 80)])

    def test_unsupported_address_type(self) -> None:
        with self.assertRaises(ProtocolError) as e:
            self._at_request().receive_data(b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50")
        self.assertEqual(e.exception.reply[:2], b"\x05\x08")

    def test_oversized_domain_length_waits(self) -> None:
        """A domain length larger than what arrived is only incomplete (the timeout ends it)."""
        conn = self._at_request()
        self.assertEqual(conn.receive_data(b"\x05\x01\x00\x03\xff" + b"a" * 100), [])
        self.assertIs(conn.state, State.REQUEST)

    def test_send_out_of_turn(self) -> None:
        conn = ServerCodec()
        self.assertRaises(LocalProtocolError, conn.send, Reply(0))
        conn.receive_data(b"\x05\x01\x00")
        self.assertRaises(LocalProtocolError, conn.send, AuthResult(True))
        self.assertRaises(LocalProtocolError, conn.send, MethodChoice(0x01))

    @settings(max_examples=300)
    @given(st.binary(max_size=600), st.booleans())
    def test_random_bytes(self, data: bytes, password: bool) -> None:
        """Random input only ever yields events, waiting, or ProtocolError."""
        conn = ServerCodec()
        try:
            for event in conn.receive_data(data):
                if isinstance(event, Greeting):
                    conn.send(MethodChoice(METHOD_PASSWORD if password else METHOD_NO_AUTH))
                    conn.receive_data(b"")
        except ProtocolError:
            self.assertIs(conn.state, State.CLOSED)


class Datagrams(SynchronousTestCase):
    @given(hosts, ports, st.binary(max_size=2000))
    def test_round_trip(self, host: str, port: int, payload: bytes) -> None:
        wire = codec.build_datagram(host, port, payload)
        self.assertEqual(codec.parse_datagram(wire), codec.Datagram(0, host, port, payload))

    def test_fragment_number_kept(self) -> None:
        wire = b"\x00\x00\x01" + codec.encode_address("1.2.3.4", 53) + b"x"
        self.assertEqual(codec.parse_datagram(wire).frag, 1)

    def test_malformed(self) -> None:
        for bad in (b"", b"\x00\x00\x00", b"\x00\x00\x00\x01\x01\x02", b"\x00\x00\x00\x09abcdefg"):
            self.assertRaises(ProtocolError, codec.parse_datagram, bad)
