"""VLESS: codec round trips (hypothesis), settings as 4.34 reads them, and the server in
memory (tunnel, UDP, fallback choice, probes and fuzzed first packets never answered)."""

from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.fallback.settings import parse_fallbacks
from vtwist.proxy.guard import ProbeGuard
from vtwist.proxy.vless import codec as C
from vtwist.proxy.vless.server import Phase, VLESSServerFactory
from vtwist.proxy.vless.settings import (
    VLESSAccount,
    parse_inbound_settings,
    parse_outbound_settings,
)
from vtwist.sansio import NEED_DATA
from vtwist.testing.doubles import HalfCloseTransport
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

UUID = "27848739-7e62-4138-9fd3-098a63964b6b"
POLICY = Policy({0: LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)})

domains = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){1,3}",
                        fullmatch=True)
# IPv4-mapped IPv6 addresses decode as the IPv4 address they map (as the other codecs do)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
hosts = st.one_of(domains, st.ip_addresses(v=4).map(str), ipv6)
destinations = st.builds(lambda n, h, p: Destination(n, h, p) if n == "tcp"
                         else Destination.udp(h, p),
                         st.sampled_from(["tcp", "udp"]), hosts, st.integers(0, 65535))
addons = st.builds(C.Addons, st.text(max_size=40), st.binary(max_size=40))


def split_feed(parser: Any, data: bytes, cuts: list[int]) -> Any:
    """Feed ``data`` in pieces cut at ``cuts``; the first result that is not NEED_DATA."""
    points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
    start = 0
    result: Any = NEED_DATA
    for p in points:
        result = parser.feed(data[start:p])
        start = p
        if result is not NEED_DATA:
            return result
    return result


class CodecTests(SynchronousTestCase):
    """Bytes as 4.34 writes and reads them."""

    def test_known_bytes(self) -> None:
        uid = bytes(range(16))
        req = C.encode_request(uid, C.CMD_TCP, Destination.tcp("example.com", 443))
        self.assertEqual(req, b"\x00" + uid + b"\x00\x01\x01\xbb\x02\x0bexample.com")
        self.assertEqual(C.encode_request(uid, C.CMD_UDP, Destination.udp("1.2.3.4", 53)),
                         b"\x00" + uid + b"\x00\x02\x00\x35\x01\x01\x02\x03\x04")
        self.assertEqual(C.encode_request(uid, C.CMD_MUX, None), b"\x00" + uid + b"\x00\x03")
        self.assertEqual(C.encode_response(), b"\x00\x00")
        self.assertEqual(C.encode_addons(C.Addons("xtls-rprx-direct")),
                         b"\x0a\x10xtls-rprx-direct")

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(min_size=16, max_size=16), st.sampled_from([C.CMD_TCP, C.CMD_UDP]),
           destinations, addons, st.binary(max_size=64), st.lists(st.integers(0, 400)))
    def test_request_round_trip(self, uid: bytes, cmd: int, dest: Destination,
                                extra: C.Addons, payload: bytes, cuts: list[int]) -> None:
        if len(C.encode_addons(extra)) > 255:
            return
        wire = C.encode_request(uid, cmd, dest, extra) + payload
        got = split_feed(C.RequestParser(lambda u: "acct" if u == uid else None), wire, cuts)
        self.assertIsInstance(got, C.Request)
        want = dest.with_network("tcp" if cmd == C.CMD_TCP else "udp")
        self.assertEqual((got.uuid, got.command, got.destination, got.addons, got.account),
                         (uid, cmd, want, extra, "acct"))
        self.assertTrue(payload.startswith(got.leftover))

    def test_mux_request(self) -> None:
        uid = os.urandom(16)
        got = C.RequestParser(lambda u: 1).feed(C.encode_request(uid, C.CMD_MUX, None) + b"x")
        self.assertEqual((got.command, got.destination, got.leftover),
                         (C.CMD_MUX, C.MUX_DESTINATION, b"x"))

    def test_invalid_requests(self) -> None:
        uid = os.urandom(16)
        parser = lambda: C.RequestParser(lambda u: 1 if u == uid else None)  # noqa: E731
        self.assertEqual(parser().feed(b"\x01" + uid), C.Invalid("invalid request version 1", True))
        self.assertTrue(parser().feed(b"\x00" + os.urandom(16)).fallback)
        bad_cmd = parser().feed(b"\x00" + uid + b"\x00\x07")
        self.assertFalse(bad_cmd.fallback)
        bad_atyp = parser().feed(b"\x00" + uid + b"\x00\x01\x00\x50\x04")
        self.assertIn("unknown address type", bad_atyp.reason)
        bad_domain = parser().feed(b"\x00" + uid + b"\x00\x01\x00\x50\x02\x03a b")
        self.assertIn("invalid domain", bad_domain.reason)
        empty = parser().feed(b"\x00" + uid + b"\x00\x01\x00\x50\x02\x00")
        self.assertIn("empty domain", empty.reason)
        bad_addons = parser().feed(b"\x00" + uid + b"\x02\x0a\x05\x01")
        self.assertIn("addons", bad_addons.reason)
        self.assertIs(parser().feed(b"\x00" + uid[:5]), NEED_DATA)
        # an IP literal sent as a domain is the IP (4.34)
        ip = parser().feed(b"\x00" + uid + b"\x00\x01\x00\x50\x02\x07" + b"1.2.3.4")
        self.assertEqual(ip.destination, Destination.tcp("1.2.3.4", 80))

    def test_unknown_addon_fields_skipped(self) -> None:
        raw = (b"\x18\x96\x01"               # field 3 varint
               + b"\x0a\x03abc"              # Flow
               + b"\x25\x01\x02\x03\x04"     # field 4 fixed32
               + b"\x29" + bytes(8)          # field 5 fixed64
               + b"\x32\x02zz"               # field 6 bytes
               + b"\x12\x02\xff\x00")        # Seed
        self.assertEqual(C.decode_addons(raw), C.Addons("abc", b"\xff\x00"))

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_parser_never_raises(self, data: bytes) -> None:
        uid = data[1:17] if len(data) >= 17 else os.urandom(16)
        result = C.RequestParser(lambda u: 1 if u == uid else None).feed(data)
        self.assertTrue(result is NEED_DATA or isinstance(result, (C.Request, C.Invalid)))

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_addons_decode_never_raises_else(self, data: bytes) -> None:
        try:
            C.decode_addons(data)
        except C.VLESSError:
            pass

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(addons, st.binary(max_size=50))
    def test_response_round_trip(self, extra: C.Addons, payload: bytes) -> None:
        if len(C.encode_addons(extra)) > 255:
            return
        wire = C.encode_response(extra) + payload
        parser = C.ResponseParser()
        got: Any = NEED_DATA
        for i in range(len(wire)):
            got = parser.feed(wire[i:i + 1])
            if got is not NEED_DATA:
                rest = wire[i + 1:]
                break
        self.assertEqual(got[0], extra)
        self.assertEqual(got[1] + rest, payload)

    def test_response_wrong_version(self) -> None:
        with self.assertRaises(C.VLESSError):
            C.ResponseParser().feed(b"\x01\x00")

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.binary(min_size=1, max_size=C.MAX_PACKET), max_size=8),
           st.lists(st.integers(0, 20000)))
    def test_packets_round_trip(self, packets: list[bytes], cuts: list[int]) -> None:
        wire = b"".join(C.encode_packet(p) for p in packets)
        dec = C.PacketDecoder()
        out: list[bytes] = []
        start = 0
        for p in sorted({c % (len(wire) + 1) for c in cuts}) + [len(wire)]:
            out += dec.feed(wire[start:p])
            start = p
        self.assertEqual(out, packets)
        self.assertTrue(dec.at_boundary)

    def test_oversized_or_empty_packet_dropped_as_4_34(self) -> None:
        self.assertEqual(C.encode_packet(b""), b"")
        self.assertEqual(C.encode_packet(b"x" * (C.MAX_PACKET + 1)), b"")
        self.assertEqual(C.PacketDecoder().feed(b"\x00\x00\x00\x01a"), [b"", b"a"])


class SettingsTests(SynchronousTestCase):
    """infra/conf/vless.go's checks, each naming its JSON path."""

    def inbound(self, value: dict[str, Any], warnings: list[str] | None = None) -> Any:
        sink = warnings.append if warnings is not None else None
        return parse_inbound_settings(Node(value, "inbounds[0].settings", sink))

    def outbound(self, value: dict[str, Any]) -> Any:
        return parse_outbound_settings(Node(value, "outbounds[0].settings"))

    def assertError(self, fn: Any, value: Any, path: str, text: str = "") -> None:
        with self.assertRaises(ConfigError) as ctx:
            fn(value)
        self.assertIn(path, str(ctx.exception))
        self.assertIn(text, str(ctx.exception))

    def test_inbound(self) -> None:
        warnings: list[str] = []
        s = self.inbound({"clients": [{"id": UUID, "level": 1, "email": "a@b",
                                       "flow": "xtls-rprx-direct"}],
                          "decryption": "none", "fallbacks": [{"dest": 80}]}, warnings)
        self.assertEqual(s.clients, [VLESSAccount(bytes.fromhex(UUID.replace("-", "")), 1,
                                                  "a@b", "xtls-rprx-direct")])
        self.assertEqual(s.fallbacks, parse_fallbacks(Node([{"dest": 80}])))
        self.assertEqual(len(warnings), 1)
        self.assertIn("inbounds[0].settings.clients[0].flow", warnings[0])

    def test_inbound_errors(self) -> None:
        ok = {"id": UUID}
        self.assertError(self.inbound, {"clients": [ok]}, "settings.decryption", '"none"')
        self.assertError(self.inbound, {"clients": [ok], "decryption": "aes"},
                         "settings.decryption")
        self.assertError(self.inbound, {"clients": [{"id": "nope"}], "decryption": "none"},
                         "clients[0].id")
        self.assertError(self.inbound, {"clients": [{"id": UUID, "encryption": "none"}],
                                        "decryption": "none"}, "clients[0].encryption")
        self.assertError(self.inbound, {"clients": [{"id": UUID, "flow": 1}],
                                        "decryption": "none"}, "clients[0].flow")
        self.assertError(self.inbound, {"clients": [ok], "decryption": "none",
                                        "fallback": {"dest": 80}}, "settings.fallback")
        dup = [{"id": UUID, "email": "A@x"}, {"id": UUID.replace("2", "3"), "email": "a@X"}]
        self.assertError(self.inbound, {"clients": dup, "decryption": "none"},
                         "clients[1].email", "already exists")
        self.assertError(self.inbound, {"clients": [ok], "decryption": "none",
                                        "fallbacks": [{"dest": 80, "xver": 5}]},
                         "fallbacks[0].xver")

    def test_outbound(self) -> None:
        s = self.outbound({"vnext": [{"address": "[::1]", "port": 443, "users": [
            {"id": UUID, "encryption": "none", "level": 2}]}]})
        self.assertEqual((s.servers[0].address, s.servers[0].port, s.servers[0].users[0].level),
                         ("::1", 443, 2))
        user = {"id": UUID, "encryption": "none"}
        self.assertError(self.outbound, {"vnext": []}, "settings.vnext")
        self.assertError(self.outbound, {"vnext": [{"address": "a", "port": 1, "users": []}]},
                         "vnext[0].users")
        self.assertError(self.outbound, {"vnext": [{"address": "a", "port": 1,
                                                    "users": [{"id": UUID}]}]},
                         "users[0].encryption")
        self.assertError(self.outbound, {"vnext": [{"port": 1, "users": [user]}]},
                         "vnext[0].address")
        self.assertError(self.outbound, {"vnext": [{"address": "a", "port": 0,
                                                    "users": [user]}]}, "vnext[0].port")

    def test_whole_config(self) -> None:
        from vtwist.config.loader import parse_config
        config = parse_config({
            "inbounds": [{"port": 1443, "protocol": "vless", "settings": {
                "clients": [{"id": UUID}], "decryption": "none"}}],
            "outbounds": [{"protocol": "vless", "settings": {"vnext": [{
                "address": "example.com", "port": 443,
                "users": [{"id": UUID, "encryption": "none"}]}]}}]})
        self.assertEqual(config.inbounds[0].protocol, "vless")
        self.assertEqual(config.outbounds[0].settings.servers[0].address, "example.com")


def _target() -> tuple[RelayProtocol, HalfCloseTransport]:
    p = RelayProtocol()
    t = HalfCloseTransport()
    p.makeConnection(t)
    return p, t


class ServerTests(SynchronousTestCase):
    """The inbound in memory over a recording tunnel service."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.account = VLESSAccount(os.urandom(16), 0, "u@test")
        self.tunnels = RecordingTunnels(self.clock)
        self.guard = ProbeGuard(max_held=100_000, rng=random.Random(3))
        self.factory = self.make()

    def make(self, fallbacks: Any = ()) -> VLESSServerFactory:
        return VLESSServerFactory([self.account], self.tunnels, POLICY, "vless-in",
                                  fallbacks=list(fallbacks), guard=self.guard)

    def connect(self, factory: VLESSServerFactory | None = None) -> tuple[Any, Any]:
        proto = (factory or self.factory).buildProtocol(None)
        t = HalfCloseTransport()
        proto.makeConnection(t)
        return proto, t

    def request(self, dest: Destination | None = None, cmd: int = C.CMD_TCP) -> bytes:
        return C.encode_request(self.account.uuid, cmd,
                                dest or Destination.tcp("example.com", 443))

    def test_tcp_round_trip(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(self.request() + b"GET / HTTP/1.0\r\n")
        dest, kw, d = self.tunnels.connects[0]
        self.assertEqual((dest, kw["email"], kw["inbound_tag"]),
                         (Destination.tcp("example.com", 443), "u@test", "vless-in"))
        self.assertEqual(t.value(), b"")
        out, target = _target()
        d.callback(out)
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\n")
        out.dataReceived(b"HTTP/1.0 200 OK\r\n")
        out.dataReceived(b"body")
        self.assertEqual(t.value(), b"\x00\x00HTTP/1.0 200 OK\r\nbody")
        proto.dataReceived(b"more")
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\nmore")
        proto.readConnectionLost()
        self.assertTrue(target.writeClosed)
        out.readConnectionLost()
        self.assertTrue(t.disconnecting)

    def test_request_in_pieces(self) -> None:
        proto, t = self.connect()
        for b in self.request():
            proto.dataReceived(bytes([b]))
        self.assertEqual(len(self.tunnels.connects), 1)

    def test_udp(self) -> None:
        dest = Destination.udp("8.8.8.8", 53)
        proto, t = self.connect()
        proto.dataReceived(self.request(dest, C.CMD_UDP) + C.encode_packet(b"q1")
                           + C.encode_packet(b"q2")[:2])
        self.assertEqual(t.value(), b"\x00\x00")  # the response header at once
        proto.dataReceived(C.encode_packet(b"q2")[2:])
        (session,) = self.tunnels.sessions
        self.assertEqual(session.sent, [(b"q1", dest), (b"q2", dest)])
        session.onPacket(b"answer", dest)
        self.assertEqual(t.value(), b"\x00\x00" + C.encode_packet(b"answer"))
        proto.connectionLost(None)
        self.assertTrue(session.closed)

    def test_mux_runs_the_mux_server(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(self.request(cmd=C.CMD_MUX))
        self.assertIs(proto.phase, Phase.STREAM)
        self.assertEqual(type(proto.side).__name__, "MuxServer")
        self.assertEqual(t.value(), b"")

    def test_bad_request_never_answered(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIs(proto.phase, Phase.PROBE)
        proto.dataReceived(os.urandom(3000))
        self.assertEqual(t.value(), b"")
        self.assertFalse(t.disconnecting)
        self.clock.advance(4 + self.guard.max_delay + 0.1)
        self.assertTrue(t.writeClosed or t.disconnecting)
        self.assertEqual(t.value(), b"")

    def test_handshake_timeout(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(self.request()[:10])
        self.clock.advance(4.01)
        self.assertIs(proto.phase, Phase.PROBE)
        self.assertEqual(t.value(), b"")

    def test_fallback_choice(self) -> None:
        """Which connections 4.34 falls back for (the hand-off itself: test_fallback)."""
        chosen: list[tuple[bytes, str]] = []
        factory = self.make(parse_fallbacks(Node([{"dest": 80}])))
        import vtwist.proxy.vless.server as server_module

        class Link:
            def received(self, data: bytes) -> None: ...
            def eof(self) -> None: ...
            def lost(self, reason: Any = None) -> None: ...

        def fake(transport: Any, fb: Any, early: bytes, reactor: Any, policy: Any,
                 *counting: Any) -> Any:
            chosen.append((early, fb.dest))
            return Link()
        self.patch(server_module, "hand_off", fake)
        for first in (b"short", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                      b"\x00" + os.urandom(16) + b"\x00\x01"):
            proto, t = self.connect(factory)
            proto.dataReceived(first)
            self.assertIs(proto.phase, Phase.FALLBACK)
            self.assertEqual(chosen[-1], (first, "127.0.0.1:80"))
        # a known UUID with a bad rest is refused, not handed on (4.34)
        proto, t = self.connect(factory)
        proto.dataReceived(C.encode_request(self.account.uuid, C.CMD_TCP,
                                            Destination.tcp("a.b", 1))[:18] + b"\x00\x09")
        self.assertIs(proto.phase, Phase.PROBE)
        # a silent client goes to the fallback after the handshake timeout (4.34)
        proto, t = self.connect(factory)
        self.clock.advance(4.01)
        self.assertEqual(chosen[-1], (b"", "127.0.0.1:80"))
        # a valid request is served
        proto, t = self.connect(factory)
        proto.dataReceived(self.request())
        self.assertIs(proto.phase, Phase.STREAM)

    def test_fuzzed_first_packets(self) -> None:
        """Random and mutated first packets: never answered, never raise; a real client is
        served in parallel."""
        rng = random.Random(11)
        good = self.request() + b"payload"
        held = []
        for i in range(1500):
            kind = i % 3
            if kind == 0:
                data = rng.randbytes(rng.randint(1, 600))
            elif kind == 1:
                data = bytearray(good)
                for _ in range(rng.randint(1, 4)):
                    pos = rng.randrange(0, 18)  # the version and UUID: never valid after
                    data[pos] ^= rng.randint(1, 255)
                data = bytes(data)
            else:
                data = good[:rng.randint(0, len(good) - 8)] + rng.randbytes(rng.randint(0, 40))
            proto, t = self.connect()
            for piece in (data[:7], data[7:]):
                if piece:
                    proto.dataReceived(piece)
            self.assertEqual(t.value(), b"", f"answered {data!r}")
            held.append((proto, t))
            if i % 100 == 0:
                real, rt = self.connect()
                real.dataReceived(good)
                out, target = _target()
                self.tunnels.connects[-1][2].callback(out)
                self.assertEqual(target.value(), b"payload")
                out.dataReceived(b"ok")
                self.assertEqual(rt.value(), b"\x00\x00ok")
        self.clock.advance(30)
        for proto, t in held:
            self.assertEqual(t.value(), b"")
            proto.connectionLost(None)
        self.assertEqual(self.guard.held, 0)


class ClientTests(SynchronousTestCase):
    """The client endpoint's protocol in memory: header timing, response, UDP framing."""

    def setUp(self) -> None:
        from twisted.internet.defer import succeed
        from twisted.internet.protocol import Protocol

        from vtwist.proxy.vless.client import VLESSClientEndpoint

        self.clock = Clock()
        self.account = VLESSAccount(os.urandom(16))
        self.lower = HalfCloseTransport()
        got: list[bytes] = []
        self.got = got
        lower = self.lower

        class App(Protocol):
            def dataReceived(self, data: bytes) -> None:
                got.append(data)

        class Lower:
            def connect(self, factory: Any) -> Any:
                proto = factory.buildProtocol(None)
                proto.makeConnection(lower)
                self.proto = proto
                return succeed(proto)

        self.lowerEndpoint = Lower()
        self.App = App
        self.make = lambda dest, cmd=C.CMD_TCP: VLESSClientEndpoint(  # noqa: E731
            self.lowerEndpoint, self.account, dest, reactor=self.clock, command=cmd)

    def connect(self, dest: Destination, cmd: int = C.CMD_TCP) -> Any:
        from twisted.internet.protocol import Factory
        apps: list[Any] = []
        self.make(dest, cmd).connect(Factory.forProtocol(self.App)).addCallback(apps.append)
        return apps[0], self.lowerEndpoint.proto

    def test_header_rides_the_first_write(self) -> None:
        dest = Destination.tcp("example.com", 80)
        app, proto = self.connect(dest)
        self.assertEqual(self.lower.value(), b"")
        app.transport.write(b"GET /")
        self.assertEqual(self.lower.value(),
                         C.encode_request(self.account.uuid, C.CMD_TCP, dest) + b"GET /")
        self.clock.advance(1)  # no second header
        proto.dataReceived(b"\x00")
        proto.dataReceived(b"\x03ab")  # addons of 3 bytes: 2 so far
        self.assertEqual(self.got, [])
        proto.dataReceived(b"\x01" + b"HTTP")  # (a protobuf of junk is refused below)
        self.assertTrue(self.lower.disconnecting or self.lower.disconnected)

    def test_header_alone_after_100_ms(self) -> None:
        dest = Destination.tcp("example.com", 80)
        app, proto = self.connect(dest)
        self.clock.advance(0.1)
        self.assertEqual(self.lower.value(), C.encode_request(self.account.uuid, C.CMD_TCP, dest))
        proto.dataReceived(b"\x00\x00HTTP/1.1 200 OK")
        proto.dataReceived(b"\r\n")
        self.assertEqual(b"".join(self.got), b"HTTP/1.1 200 OK\r\n")

    def test_wrong_response_version_aborts(self) -> None:
        app, proto = self.connect(Destination.tcp("example.com", 80))
        proto.dataReceived(b"\x01\x00data")
        self.assertEqual(self.got, [])

    def test_udp_framing(self) -> None:
        dest = Destination.udp("1.1.1.1", 53)
        app, proto = self.connect(dest, C.CMD_UDP)
        app.transport.write(b"query")
        self.assertEqual(self.lower.value(), C.encode_request(self.account.uuid, C.CMD_UDP, dest)
                         + b"\x00\x05query")
        proto.dataReceived(b"\x00\x00" + C.encode_packet(b"a1") + C.encode_packet(b"b2")[:3])
        proto.dataReceived(C.encode_packet(b"b2")[3:])
        self.assertEqual(self.got, [b"a1", b"b2"])

    def test_uncarriable_destination_fails_at_once(self) -> None:
        from twisted.internet.error import ConnectError
        from twisted.internet.protocol import Factory
        d = self.make(Destination.tcp("ä" * 3 + ".example", 80)).connect(
            Factory.forProtocol(self.App))
        self.failureResultOf(d, ConnectError)
