"""The Trojan inbound in memory (TCP, UDP, refusals held by the probe guard) and on real
sockets (fuzzed first packets beside a real client), and the client endpoint."""

from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.interop.transport_support import HashingClient
from tests.netutil import free_port
from vtwist.address import Destination
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.guard import ProbeGuard
from vtwist.proxy.trojan import codec as C
from vtwist.proxy.trojan.client import TrojanClientEndpoint
from vtwist.proxy.trojan.server import Phase, TrojanServerFactory
from vtwist.proxy.trojan.settings import TrojanInboundSettings, TrojanUser
from vtwist.testing.doubles import Echo, HalfCloseTransport, Recorder, log_lines
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

POLICY = Policy({0: LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)})
USERS = [TrojanUser("alpha", email="a@test"), TrojanUser("beta", level=0)]
DEST = Destination.tcp("example.com", 443)


def _target() -> tuple[RelayProtocol, HalfCloseTransport]:
    p = RelayProtocol()
    t = HalfCloseTransport()
    p.makeConnection(t)
    return p, t


class ServerBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tunnels = RecordingTunnels(self.clock)
        self.guard = ProbeGuard(min_delay=2, max_delay=8, linger=10, max_held=100_000,
                                rng=random.Random(1))
        self.factory = TrojanServerFactory(TrojanInboundSettings(list(USERS)), self.tunnels,
                                           POLICY, tag="trojan-in", guard=self.guard)
        self.logs = log_lines(self, "vtwist")

    def connect(self) -> tuple[Any, HalfCloseTransport]:
        proto = self.factory.buildProtocol(None)
        t = HalfCloseTransport()
        proto.makeConnection(t)
        return proto, t


class TCPTests(ServerBase):
    def test_round_trip_and_half_close(self) -> None:
        proto, t = self.connect()
        request = C.encode_request(USERS[0].key, C.CMD_TCP, DEST)
        proto.dataReceived(request[:30])
        proto.dataReceived(request[30:] + b"GET / HTTP/1.0\r\n")
        (dest, kw, d), = self.tunnels.connects
        self.assertEqual((dest, kw["email"], kw["inbound_tag"]), (DEST, "a@test", "trojan-in"))
        out, target = _target()
        d.callback(out)
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\n")
        proto.dataReceived(b"more")
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\nmore")
        out.dataReceived(b"HTTP/1.0 200 OK\r\n")
        self.assertEqual(t.value(), b"HTTP/1.0 200 OK\r\n")  # no header of its own
        proto.readConnectionLost()
        self.assertTrue(target.writeClosed)
        out.readConnectionLost()
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.factory.accepted["tcp"], 1)

    def test_connect_failure_closes(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(C.encode_request(USERS[1].key, C.CMD_TCP, DEST))
        self.tunnels.connects[0][2].errback(ConnectionRefusedError("no"))
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")


class UDPTests(ServerBase):
    def test_datagrams_both_ways(self) -> None:
        proto, t = self.connect()
        a, b = Destination.udp("1.2.3.4", 53), Destination.udp("::1", 5353)
        wire = (C.encode_request(USERS[0].key, C.CMD_UDP, a) + C.encode_packet(a, b"q1")
                + C.encode_packet(b, b"q2")[:5])
        proto.dataReceived(wire)
        proto.dataReceived(C.encode_packet(b, b"q2")[5:] + C.encode_packet(a, b"q3"))
        sessions = self.tunnels.sessions
        self.assertEqual(len(sessions), 2)  # one tunnel per destination
        self.assertEqual(sessions[0].sent, [(b"q1", a), (b"q3", a)])
        self.assertEqual(sessions[1].sent, [(b"q2", b)])
        sessions[1].onPacket(b"r2", b)
        sessions[0].onPacket(b"r1", a)
        got = C.PacketDecoder().feed(t.value())
        self.assertEqual([(p.destination, p.payload) for p in got], [(b, b"r2"), (a, b"r1")])
        proto.connectionLost(None)
        self.assertTrue(all(s.closed for s in sessions))

    def test_bad_frame_closes(self) -> None:
        proto, t = self.connect()
        a = Destination.udp("1.2.3.4", 53)
        proto.dataReceived(C.encode_request(USERS[0].key, C.CMD_UDP, a)
                           + b"\x01\x01\x02\x03\x04\x00\x35\xff\xff\r\n")
        self.assertTrue(t.disconnecting)


class RefusalTests(ServerBase):
    def assertHeld(self, proto: Any, t: HalfCloseTransport) -> None:
        self.assertIs(proto.phase, Phase.PROBE)
        self.assertEqual(t.value(), b"")
        self.assertFalse(t.disconnecting)
        self.clock.advance(4 + 1.9)
        self.assertFalse(t.writeClosed)
        self.clock.advance(8)
        self.assertTrue(t.writeClosed)  # a FIN, never an answer
        self.assertEqual(t.value(), b"")
        self.assertEqual(self.tunnels.connects, [])

    def test_wrong_password_is_held(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(C.encode_request(C.password_key("gamma"), 1, DEST) + b"x" * 100)
        proto.dataReceived(b"y" * 1000)
        self.assertEqual(proto.discarded, 1000)
        self.assertHeld(proto, t)
        self.assertTrue(any("not a valid user" in line for line in self.logs), self.logs)

    def test_http_is_held(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertHeld(proto, t)

    def test_silence_then_timeout(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(USERS[0].key[:10])
        self.clock.advance(4)
        self.assertIs(proto.phase, Phase.PROBE)
        self.clock.advance(8.1)
        self.assertTrue(t.writeClosed)
        self.assertEqual(t.value(), b"")

    def test_malformed_after_valid_key_is_held(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(USERS[0].key + b"\r\n\x01\x09garbage")
        self.assertHeld(proto, t)

    def test_half_close_mid_request(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(USERS[0].key[:30])
        proto.readConnectionLost()
        self.assertIs(proto.phase, Phase.PROBE)
        self.assertEqual(t.value(), b"")

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, 120), st.binary(min_size=1, max_size=3),
                  st.sampled_from([C.CMD_TCP, C.CMD_UDP, 0, 2, 255])).map(
            lambda m: _mutate(*m))),
        st.lists(st.integers(1, 60), max_size=4))
    def test_fuzz_never_answers_never_raises(self, data: bytes, cuts: list[int]) -> None:
        """Random and mutated first packets: accepted (a valid request survived the
        mutation), or refused without a byte back; never an exception."""
        proto, t = self.connect()
        pos = 0
        for n in [*cuts, len(data)]:
            proto.dataReceived(data[pos:pos + n])
            pos += n
        proto.dataReceived(data[pos:])
        self.clock.pump([1.0] * 30)
        self.assertEqual(t.value(), b"")
        if proto.phase is Phase.PROBE or proto.phase is Phase.DONE:
            self.assertTrue(t.writeClosed or t.disconnecting, (proto.phase, data, cuts))
        proto.connectionLost(None)


def _mutate(at: int, junk: bytes, command: int) -> bytes:
    request = C.encode_request(USERS[0].key, command, DEST) + b"payload"
    at %= len(request)
    return request[:at] + junk + request[at + len(junk):]


class ParallelFuzz(TestCase):
    """Real sockets: probes with random and mutated first packets get no byte back, and a
    real client (vtwist's Trojan client) keeps moving data through the same server."""

    timeout = 60

    async def test_probes_beside_a_real_client(self) -> None:
        from tests.services import start_service

        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo))
        self.addCleanup(echo.stopListening)
        port = free_port()
        service = await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "trojan",
                          "settings": {"clients": [{"password": "alpha"}]}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        factory = service.inbound_services[0].factory
        self.assertIsInstance(factory, TrojanServerFactory)
        factory.guard.min_delay = factory.guard.max_delay = 0.1
        factory.policy = Policy({0: LevelPolicy(handshake=0.5)})
        rng = random.Random(7)
        probes: list[Recorder] = []
        for i in range(40):
            if i % 2:
                data = os.urandom(rng.randrange(1, 300))
            else:
                data = _mutate(rng.randrange(200), os.urandom(rng.randrange(1, 4)), 1)
                data = data.replace(C.password_key("alpha")[:56], C.password_key("x")) \
                    if rng.random() < 0.5 else data
            probe = Recorder()
            await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(lambda p=probe: p))
            probe.transport.write(data)
            probes.append(probe)
        client = HashingClient(2 * 1024 * 1024)
        endpoint = TrojanClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                        C.password_key("alpha"),
                                        Destination.tcp("127.0.0.1", echo.getHost().port),
                                        reactor=reactor)
        await endpoint.connect(Factory.forProtocol(lambda: client))
        await client.done
        self.assertEqual(client.got.hexdigest(), client.sent.hexdigest())
        for _ in range(100):
            if all(p.lost is not None for p in probes):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        for probe in probes:
            if bytes(probe.data):
                # only a mutation that left a valid request in place may reach the echo
                self.assertIn(bytes(probe.data), [b"payload"[i:] for i in range(8)] + [b""])
        self.assertTrue(all(p.lost is not None for p in probes))
        self.assertGreater(factory.refused, 20)


class ClientLayerTests(TestCase):
    """The client endpoint over a real socket: the header rides the first write, or goes
    alone after the delay; a destination Trojan cannot carry fails before connecting."""

    async def test_header_alone_after_delay(self) -> None:
        got: list[Recorder] = []

        def make() -> Recorder:
            r = Recorder()
            got.append(r)
            return r

        listening = reactor.listenTCP(0, Factory.forProtocol(make), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        ep = TrojanClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port),
            C.password_key("k"), DEST, reactor=reactor, header_delay=0.05)
        app = await ep.connect(Factory.forProtocol(Recorder))
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(bytes(got[0].data), C.encode_request(C.password_key("k"), 1, DEST))
        app.transport.write(b"after")
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(bytes(got[0].data).endswith(b"\r\nafter"))
        app.transport.loseConnection()

    async def test_uncarriable_destination(self) -> None:
        ep = TrojanClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", 9),
                                  C.password_key("k"), Destination.tcp("a" * 300, 1),
                                  reactor=reactor)
        with self.assertRaises(Exception) as e:
            await ep.connect(Factory.forProtocol(Recorder))
        self.assertIn("cannot carry", str(e.exception))
        await defer.succeed(None)
