"""The Shadowsocks inbound in memory (relay, UDP, probes, replays) and fuzzed over real sockets
while a real client goes on working; the outbound's client protocol in memory."""

from __future__ import annotations

import os
import random
import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.interop.vmess_harness import socks_echo
from tests.netutil import free_port
from tests.services import start_service
from vtwist.address import Destination
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.guard import ProbeGuard
from vtwist.proxy.shadowsocks.aead import Account, StreamDecoder, StreamEncoder
from vtwist.proxy.shadowsocks.codec import (
    ClientStream,
    ServerHandshake,
    decode_packet,
    encode_packet,
)
from vtwist.proxy.shadowsocks.outbound import ShadowsocksClientEndpoint
from vtwist.proxy.shadowsocks.server import ShadowsocksDatagrams, ShadowsocksServerFactory
from vtwist.proxy.shadowsocks.settings import ShadowsocksInboundSettings
from vtwist.testing.doubles import (
    FakeUDPPort,
    HalfCloseRecorder,
    HalfCloseTransport,
    log_lines,
)
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

POLICY = Policy({0: LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)})
PASSWORD = "secret"


def _target() -> tuple[RelayProtocol, HalfCloseTransport]:
    p = RelayProtocol()
    t = HalfCloseTransport()
    p.makeConnection(t)
    return p, t


class ServerBase(SynchronousTestCase):
    method = "aes-128-gcm"

    def setUp(self) -> None:
        self.clock = Clock()
        self.account = Account.from_password(self.method, PASSWORD)
        self.tunnels = RecordingTunnels(self.clock)
        self.guard = ProbeGuard(min_delay=2, max_delay=8, linger=10, max_held=100_000,
                                rng=random.Random(1))
        settings = ShadowsocksInboundSettings(self.account, "ss@test", 0, ("tcp", "udp"))
        self.factory = ShadowsocksServerFactory(self.tunnels, settings, POLICY, "ss-in",
                                                guard=self.guard)
        self.logs = log_lines(self, "vtwist")

    def connect(self) -> tuple[Any, HalfCloseTransport]:
        proto = self.factory.buildProtocol(None)
        t = HalfCloseTransport()
        proto.makeConnection(t)
        return proto, t

    def request(self, payload: bytes = b"", dest: Destination | None = None) -> bytes:
        stream = ClientStream(self.account, dest or Destination.tcp("example.com", 443))
        return b"".join(stream.encode(payload))


class Relay(ServerBase):
    def test_round_trip(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(self.request(b"GET / HTTP/1.0\r\n"))
        dest, kw, d = self.tunnels.connects[0]
        self.assertEqual(dest, Destination.tcp("example.com", 443))
        self.assertEqual((kw["email"], kw["inbound_tag"]), ("ss@test", "ss-in"))
        out, target = _target()
        d.callback(out)
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\n")
        out.dataReceived(b"HTTP/1.0 200 OK\r\n")
        dec = StreamDecoder(self.account)
        self.assertEqual(b"".join(dec.feed(t.value())), b"HTTP/1.0 200 OK\r\n")
        # the target's EOF half-closes the client's TCP; the client's EOF ends the uplink
        out.readConnectionLost()
        self.assertTrue(t.writeClosed)
        proto.readConnectionLost()
        self.assertTrue(target.writeClosed or target.disconnecting)

    def test_address_split_over_chunks(self) -> None:
        enc = StreamEncoder(self.account)
        head = b"\x03\x0bexample.com\x01\xbb"
        wire = b"".join(b"".join(enc.encode(head[i:i + 1])) for i in range(len(head)))
        wire += b"".join(enc.encode(b"body"))
        proto, t = self.connect()
        for i in range(0, len(wire), 7):
            proto.dataReceived(wire[i:i + 7])
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        self.assertEqual(target.value(), b"body")

    def test_corrupt_chunk_after_request_closes(self) -> None:
        stream = ClientStream(self.account, Destination.tcp("1.2.3.4", 80))
        proto, t = self.connect()
        proto.dataReceived(b"".join(stream.encode(b"a")))
        bad = bytearray(b"".join(stream.encode(b"b")))
        bad[3] ^= 1
        proto.dataReceived(bytes(bad))
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")

    def test_backpressure_passes_through(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(self.request())
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        target.producer.pauseProducing()
        self.assertEqual(t.producerState, "paused")

    def test_udp(self) -> None:
        port = FakeUDPPort()
        datagrams = ShadowsocksDatagrams(self.factory)
        datagrams.makeConnection(port)
        dest = Destination.udp("8.8.8.8", 53)
        client = ("10.1.1.1", 5000)
        datagrams.datagramReceived(encode_packet(self.account, dest, b"q1"), client)
        datagrams.datagramReceived(encode_packet(self.account, dest, b"q22"), client)
        other = Destination.udp("1.1.1.1", 53)
        datagrams.datagramReceived(encode_packet(self.account, other, b"q3"), client)
        self.assertEqual(len(self.tunnels.sessions), 1)  # one tunnel per client source
        session = self.tunnels.sessions[0]
        self.assertEqual(session.sent, [(b"q1", dest), (b"q22", dest), (b"q3", other)])
        session.onPacket(b"a1", dest)
        data, addr = port.written[0]
        self.assertEqual(addr, client)
        packet = decode_packet(self.account, data)
        self.assertEqual((packet.host, packet.port, packet.payload), ("8.8.8.8", 53, b"a1"))

    def test_udp_bad_and_replayed_packets_dropped(self) -> None:
        port = FakeUDPPort()
        datagrams = ShadowsocksDatagrams(self.factory)
        datagrams.makeConnection(port)
        good = encode_packet(self.account, Destination.udp("8.8.8.8", 53), b"q")
        for data in (os.urandom(10), os.urandom(100), good, good):
            datagrams.datagramReceived(data, ("10.1.1.1", 5000))
        self.assertEqual(datagrams.dropped, 3)
        self.assertEqual(len(self.tunnels.sessions[0].sent), 1)
        self.assertEqual(port.written, [])


class Probes(ServerBase):
    """Bad first packets are never answered and close after the deadline and a delay."""

    def _finish(self, transports: list[HalfCloseTransport]) -> None:
        self.clock.advance(3.9)
        for t in transports:
            self.assertFalse(t.writeClosed or t.disconnecting)  # never before the deadline
        self.clock.advance(0.1)  # the deadline: a silent probe is refused now
        self.clock.advance(8)  # max probe delay: our FIN
        for t in transports:
            self.assertEqual(t.value(), b"")
            self.assertTrue(t.writeClosed or t.disconnecting)
        self.clock.advance(10)
        for t in transports:
            self.assertTrue(t.disconnecting)

    def test_probes_of_any_length(self) -> None:
        transports = []
        for n in (0, 1, 17, 32, 33, 34, 50, 100, 1000, 70000):
            proto, t = self.connect()
            if n:
                proto.dataReceived(os.urandom(n))
            transports.append(t)
        self._finish(transports)
        self.assertEqual(self.tunnels.connects, [])

    def test_replayed_request_is_held(self) -> None:
        wire = self.request(b"x")
        first, _ = self.connect()
        first.dataReceived(wire)
        proto, t = self.connect()
        proto.dataReceived(wire)
        self.assertEqual(len(self.tunnels.connects), 1)
        self.assertTrue(any("replayed salt" in line for line in self.logs), self.logs)
        self._finish([t])

    def test_client_half_close_during_handshake(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(os.urandom(20))
        proto.readConnectionLost()
        self._finish([t])

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def test_mutated_first_packets(self, data: st.DataObject) -> None:
        """Flipping, cutting or extending a good first packet never gets an answer and never
        raises; a good client in between is still served."""
        wire = bytearray(self.request(b"hello", Destination.tcp("1.2.3.4", 80)))
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] ^= data.draw(st.integers(1, 255))
        cut = data.draw(st.integers(1, len(wire)))
        extra = data.draw(st.binary(max_size=64))
        proto, t = self.connect()
        proto.dataReceived(bytes(wire[:cut]) + extra)
        good, gt = self.connect()
        before = len(self.tunnels.connects)
        good.dataReceived(self.request(b"ok"))
        self.assertEqual(len(self.tunnels.connects), before + 1)
        self.clock.advance(30)
        self.assertEqual(t.value(), b"")
        if i < 16:  # a salt bit: a different subkey, the tag fails
            self.assertEqual(len(self.tunnels.connects), before + 1)


class Client(SynchronousTestCase):
    """The outbound's client protocol against a server played by hand."""

    def test_address_with_first_write_and_reply(self) -> None:
        account = Account.from_password("chacha20-poly1305", PASSWORD)
        clock = Clock()
        lower = HalfCloseTransport()
        app = HalfCloseRecorder()
        endpoint = ShadowsocksClientEndpoint(_Fixed(lower), account,
                                             Destination.tcp("example.com", 80), reactor=clock)
        d = endpoint.connect(_factory(app))
        self.assertIs(self.successResultOf(d), app)
        app.transport.write(b"GET /")
        got = ServerHandshake(account).feed(lower.value())
        self.assertEqual((got.host, got.port, got.early), ("example.com", 80, [b"GET /"]))
        reply = b"".join(StreamEncoder(account).encode(b"200 OK"))
        proto = lower.protocol
        proto.dataReceived(reply[:10])
        proto.dataReceived(reply[10:])
        self.assertEqual(bytes(app.data), b"200 OK")
        proto.readConnectionLost()
        self.assertTrue(app.readLost)

    def test_address_alone_when_app_is_silent(self) -> None:
        account = Account.from_password("aes-128-gcm", PASSWORD)
        clock = Clock()
        lower = HalfCloseTransport()
        endpoint = ShadowsocksClientEndpoint(_Fixed(lower), account,
                                             Destination.tcp("1.2.3.4", 22), reactor=clock)
        endpoint.connect(_factory(HalfCloseRecorder()))
        self.assertEqual(lower.value(), b"")
        clock.advance(0)
        got = ServerHandshake(account).feed(lower.value())
        self.assertEqual((got.host, got.port, got.early), ("1.2.3.4", 22, []))

    def test_bad_reply_aborts(self) -> None:
        account = Account.from_password("aes-128-gcm", PASSWORD)
        lower = HalfCloseTransport()
        app = HalfCloseRecorder()
        ShadowsocksClientEndpoint(_Fixed(lower), account, Destination.tcp("1.2.3.4", 22),
                                  reactor=Clock()).connect(_factory(app))
        lower.protocol.dataReceived(os.urandom(64))
        self.assertTrue(lower.disconnecting or getattr(lower, "aborted", False))


class _Fixed:
    """An endpoint that connects at once over ``transport``."""

    def __init__(self, transport: HalfCloseTransport) -> None:
        self.transport = transport

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        proto = factory.buildProtocol(None)
        self.transport.protocol = proto
        proto.makeConnection(self.transport)
        return defer.succeed(proto)


def _factory(app: Any) -> Any:
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(lambda: app)


class FuzzOverSockets(TestCase):
    """Random and mutated first packets at a real vtwist Shadowsocks server, over TCP and
    UDP, while a real client (vtwist's SOCKS -> Shadowsocks outbound) moves data through
    it: the probes get no byte back and the client's data arrives intact."""

    timeout = 60

    async def _fuzz(self) -> None:
        from tests.interop.v2ray_runner import EchoServer

        echo = EchoServer()
        self.addCleanup(echo.stop)
        ss_port, socks_port = free_port(udp_too=True), free_port()
        server = await start_service({
            "log": {"loglevel": "none"},
            "inbounds": [{"port": ss_port, "listen": "127.0.0.1", "protocol": "shadowsocks",
                          "settings": {"method": "aes-256-gcm", "password": PASSWORD,
                                       "network": "tcp,udp"}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        await start_service({
            "log": {"loglevel": "none"},
            "inbounds": [{"port": socks_port, "listen": "127.0.0.1", "protocol": "socks",
                          "settings": {"udp": True}}],
            "outbounds": [{"protocol": "shadowsocks", "settings": {"servers": [{
                "address": "127.0.0.1", "port": ss_port, "method": "aes-256-gcm",
                "password": PASSWORD}]}}]}, self)
        account = Account.from_password("aes-256-gcm", PASSWORD)
        good = bytearray(b"".join(ClientStream(account, Destination.tcp("127.0.0.1", 9))
                                  .encode(b"hello")))
        rng = random.Random(7)
        probes = []
        for i in range(40):
            if i % 2:
                data = os.urandom(rng.randrange(1, 600))
            else:
                data = bytearray(good)
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                data = bytes(data[:rng.randrange(1, len(data) + 1)])
            s = socket.create_connection(("127.0.0.1", ss_port))
            s.setblocking(False)
            s.sendall(data)
            probes.append(s)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        for _ in range(40):
            udp.sendto(os.urandom(rng.randrange(1, 200)), ("127.0.0.1", ss_port))
        self.addCleanup(udp.close)
        for s in probes:
            self.addCleanup(s.close)
        sent, got, _ = await socks_echo(reactor, socks_port, "127.0.0.1", echo.port,
                                        4 * 1024 * 1024)
        self.assertEqual(got, sent)
        await deferLater(reactor, 0.2, lambda: None)
        for s in probes:
            try:
                answer = s.recv(100)
            except BlockingIOError:
                answer = None
            self.assertIsNone(answer, "a probe got an answer or an early close")
        self.assertRaises(BlockingIOError, udp.recv, 100)
        factory = server.inbound_services[0].factory
        self.assertEqual(factory.accepted, 1)
        self.assertLessEqual(factory.refused, 40)  # the short ones wait for the deadline

    def test_fuzz_while_serving(self) -> Any:
        return defer.ensureDeferred(self._fuzz())
