"""SOCKS5 client side: the sans-IO ClientCodec and ClientHandshake, SocksClientEndpoint in
memory, the socks outbound's UDP ASSOCIATE packet session, and its settings."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ConfigErrorMixin
from vtwist.address import Destination
from vtwist.config.loader import parse_config
from vtwist.proxy.socks import codec
from vtwist.proxy.socks.client import SocksClientEndpoint
from vtwist.proxy.socks.client_codec import (
    ClientCodec,
    ClientHandshake,
    ClientState,
    HandshakeFailed,
)
from vtwist.proxy.socks.codec import (
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    AuthResult,
    Credentials,
    Greeting,
    LocalProtocolError,
    MethodChoice,
    ProtocolError,
    Reply,
    Request,
    ServerCodec,
)
from vtwist.proxy.socks.outbound import SocksOutbound
from vtwist.proxy.upstream import UpstreamServer, UpstreamSettings, UpstreamUser
from vtwist.sansio import NEED_DATA
from vtwist.testing.doubles import FakeUDPReactor, HalfCloseTransport, Recorder, log_lines
from vtwist.transport.layer import LayerHandshakeError


def _reply(code: int = 0, host: str = "10.0.0.1", port: int = 1234) -> bytes:
    return b"\x05" + bytes((code, 0)) + codec.encode_address(host, port)


class ClientCodecTests(SynchronousTestCase):
    def test_no_auth_connect(self) -> None:
        c = ClientCodec()
        self.assertEqual(c.send(Greeting((0,))), b"\x05\x01\x00")
        self.assertIs(c.next_event(), NEED_DATA)
        c.receive_data(b"\x05")
        self.assertIs(c.next_event(), NEED_DATA)
        c.receive_data(b"\x00")
        self.assertEqual(c.next_event(), MethodChoice(0))
        self.assertEqual(c.send(Request(5, CMD_CONNECT, "example.com", 80)),
                         b"\x05\x01\x00\x03\x0bexample.com\x00\x50")
        for byte in _reply()[:-1]:
            c.receive_data(bytes((byte,)))
            self.assertIs(c.next_event(), NEED_DATA)
        c.receive_data(_reply()[-1:] + b"early")
        self.assertEqual(c.next_event(), Reply(0, "10.0.0.1", 1234))
        self.assertEqual(c.state, ClientState.ESTABLISHED)
        self.assertEqual(c.take_trailing_data(), b"early")

    def test_password(self) -> None:
        c = ClientCodec()
        c.send(Greeting((2,)))
        c.receive_data(b"\x05\x02")
        self.assertEqual(c.next_event(), MethodChoice(2))
        self.assertEqual(c.send(Credentials(b"al", b"pw")), b"\x01\x02al\x02pw")
        c.receive_data(b"\x01\x00")
        self.assertEqual(c.next_event(), AuthResult(True))
        self.assertEqual(c.state, ClientState.REQUEST)

    def test_auth_refused_and_no_acceptable(self) -> None:
        c = ClientCodec()
        c.send(Greeting((2,)))
        c.receive_data(b"\x05\x02\x01\x01")
        self.assertEqual(c.next_event(), MethodChoice(2))
        c.send(Credentials(b"a", b"b"))
        self.assertEqual(c.next_event(), AuthResult(False))
        self.assertEqual(c.state, ClientState.CLOSED)
        c = ClientCodec()
        c.send(Greeting((0,)))
        c.receive_data(b"\x05\xff")
        self.assertEqual(c.next_event(), MethodChoice(0xFF))
        self.assertEqual(c.state, ClientState.CLOSED)

    def test_failure_reply_needs_three_bytes(self) -> None:
        c = ClientCodec()
        c.send(Greeting((0,)))
        c.receive_data(b"\x05\x00")
        c.next_event()
        c.send(Request(5, CMD_CONNECT, "1.2.3.4", 80))
        c.receive_data(b"\x05\x05")
        self.assertIs(c.next_event(), NEED_DATA)
        c.receive_data(b"\x00")
        self.assertEqual(c.next_event(), Reply(5))
        self.assertEqual(c.state, ClientState.CLOSED)

    def test_broken_servers(self) -> None:
        c = ClientCodec()
        c.send(Greeting((0,)))
        c.receive_data(b"\x04\x00")
        self.assertRaises(ProtocolError, c.next_event)
        c = ClientCodec()
        c.send(Greeting((0,)))
        c.receive_data(b"\x05\x02")  # password was not offered
        self.assertRaises(ProtocolError, c.next_event)
        c = ClientCodec()
        c.send(Greeting((0,)))
        c.receive_data(b"\x05\x00")
        c.next_event()
        c.send(Request(5, CMD_CONNECT, "1.2.3.4", 80))
        c.receive_data(b"\x05\x00\x00\x09")  # unknown address type
        self.assertRaises(ProtocolError, c.next_event)
        self.assertEqual(c.state, ClientState.CLOSED)

    def test_send_out_of_turn(self) -> None:
        c = ClientCodec()
        self.assertRaises(LocalProtocolError, c.send, Request(5, CMD_CONNECT, "a", 1))
        self.assertRaises(LocalProtocolError, c.send, Greeting(()))
        c.send(Greeting((0,)))
        self.assertRaises(LocalProtocolError, c.send, Greeting((0,)))

    def test_against_the_server_codec(self) -> None:
        """Client and server codecs agree on every message, password and UDP included."""
        client = ClientHandshake(CMD_UDP_ASSOCIATE, "0.0.0.0", 0, b"alice", b"s3cret")
        server = ServerCodec()
        events = server.receive_data(client.initiate())
        self.assertEqual(events, [Greeting((2,)), Credentials(b"alice", b"s3cret")][:len(events)])
        out = server.send(MethodChoice(2))
        events += server.receive_data(b"")
        self.assertEqual(events[-1], Credentials(b"alice", b"s3cret"))
        out += server.send(AuthResult(True))
        request = client.receive_data(out)
        self.assertEqual(server.receive_data(request),
                         [Request(5, CMD_UDP_ASSOCIATE, "0.0.0.0", 0)])
        self.assertEqual(client.receive_data(server.send(Reply(0, "127.0.0.1", 5555))), b"")
        self.assertTrue(client.established)
        self.assertEqual(client.reply, Reply(0, "127.0.0.1", 5555))

    @given(st.binary(max_size=64))
    def test_garbage_never_crashes(self, data: bytes) -> None:
        client = ClientHandshake(CMD_CONNECT, "example.com", 443, b"u", b"p")
        client.initiate()
        try:
            client.receive_data(data)
        except (HandshakeFailed, ProtocolError):
            pass


class HandshakeTests(SynchronousTestCase):
    def test_v2ray_bytes(self) -> None:
        """Greeting and credentials in one write, as V2Ray's ClientHandshake sends them."""
        hs = ClientHandshake(CMD_CONNECT, "1.2.3.4", 443, b"alice", b"pw")
        self.assertEqual(hs.initiate(), b"\x05\x01\x02\x01\x05alice\x02pw")
        self.assertEqual(hs.receive_data(b"\x05\x02"), b"")
        self.assertEqual(hs.receive_data(b"\x01\x00"),
                         b"\x05\x01\x00\x01\x01\x02\x03\x04\x01\xbb")
        self.assertEqual(ClientHandshake(CMD_CONNECT, "::1", 1).initiate(), b"\x05\x01\x00")

    def test_refusals_name_the_reason(self) -> None:
        hs = ClientHandshake(CMD_CONNECT, "1.2.3.4", 443)
        hs.initiate()
        with self.assertRaises(HandshakeFailed) as e:
            hs.receive_data(b"\x05\x00" + _reply(5))
        self.assertEqual(str(e.exception), "server refused the CONNECT: connection refused (5)")
        self.assertEqual(e.exception.code, 5)
        hs = ClientHandshake(CMD_CONNECT, "1.2.3.4", 443, b"a", b"b")
        hs.initiate()
        with self.assertRaises(HandshakeFailed) as e:
            hs.receive_data(b"\x05\x02\x01\x01")
        self.assertIn("user name or password", str(e.exception))
        hs = ClientHandshake(CMD_CONNECT, "1.2.3.4", 443)
        hs.initiate()
        with self.assertRaises(HandshakeFailed):
            hs.receive_data(b"\x05\xff")


class FakeEndpoint:
    """Connects the factory's protocol to a HalfCloseTransport at once."""

    def __init__(self, fail: bool = False) -> None:
        self.transport = HalfCloseTransport(peer=("192.0.2.7", 1080))
        self.protocol: Any = None
        self.fail = fail
        self.connects = 0

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.connects += 1
        if self.fail:
            return defer.fail(ConnectError("refused"))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lower = FakeEndpoint()
        self.app = Recorder()

    def connect(self, dest: Destination, **kw: Any) -> defer.Deferred[Any]:
        endpoint = SocksClientEndpoint(self.lower, dest, reactor=self.clock, **kw)
        return endpoint.connect(_factory(self.app))

    def test_connect_then_stream(self) -> None:
        d = self.connect(Destination.tcp("example.com", 80), username=b"u", password=b"p")
        t = self.lower.transport
        self.assertEqual(t.value(), b"\x05\x01\x02\x01\x01u\x01p")
        t.clear()
        layer = self.lower.protocol
        layer.dataReceived(b"\x05\x02\x01\x00")
        self.assertEqual(t.value(), b"\x05\x01\x00\x03\x0bexample.com\x00\x50")
        self.assertNoResult(d)
        layer.dataReceived(_reply() + b"hello")
        self.assertIs(self.successResultOf(d), self.app)
        self.assertEqual(bytes(self.app.data), b"hello")
        t.clear()
        self.app.transport.write(b"up")
        self.assertEqual(t.value(), b"up")
        self.app.transport.loseWriteConnection()
        self.assertTrue(t.writeClosed)

    def test_refused_connect_fails_with_the_code_and_logs(self) -> None:
        lines = log_lines(self, "vtwist")
        d = self.connect(Destination.tcp("10.1.1.1", 81))
        self.lower.protocol.dataReceived(b"\x05\x00" + _reply(4))
        f = self.failureResultOf(d, LayerHandshakeError)
        self.assertIn("server refused the CONNECT to tcp:10.1.1.1:81: host unreachable (4)",
                      str(f.value))
        self.assertTrue(self.lower.transport.disconnecting)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("socks handshake with 192.0.2.7:1080 failed: server refused the "
                      "CONNECT to tcp:10.1.1.1:81: host unreachable (4)", lines[0])
        self.assertFalse(self.app.made)

    def test_handshake_timeout(self) -> None:
        d = self.connect(Destination.tcp("a.example", 1), timeout=4.0)
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertIn("no handshake within 4 s", str(self.failureResultOf(d).value))

    def test_close_during_handshake(self) -> None:
        d = self.connect(Destination.tcp("a.example", 1))
        self.lower.protocol.dataReceived(b"\x05")
        self.lower.protocol.connectionLost(_done())
        self.assertIn("connection closed by peer", str(self.failureResultOf(d).value))

    def test_undeliverable_destination(self) -> None:
        d = self.connect(Destination("tcp", "a" * 300, 1))
        self.failureResultOf(d, ConnectError)
        self.assertEqual(self.lower.connects, 0)


def _done() -> Any:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    return Failure(ConnectionDone())


def _factory(app: Any) -> Any:
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(lambda: app)


class FakeOutbound(SocksOutbound):
    def __init__(self, reactor: Any, users: list[UpstreamUser] | None = None,
                 address: str = "proxy.example") -> None:
        super().__init__(reactor, "up", UpstreamSettings(
            [UpstreamServer(address, 1080, users or [])]))
        self.lowers: list[FakeEndpoint] = []

    def transportEndpoint(self, server: UpstreamServer) -> Any:
        lower = FakeEndpoint()
        self.lowers.append(lower)
        return lower


class PacketSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.outbound = FakeOutbound(self.reactor)
        self.got: list[tuple[bytes, Destination]] = []
        self.closed: list[bool] = []
        self.session = self.outbound.packetSession(lambda d, s: self.got.append((d, s)),
                                                   lambda: self.closed.append(True))
        self.lower = self.outbound.lowers[0]

    def associate(self, host: str = "127.0.0.1", port: int = 5555) -> None:
        self.assertEqual(self.lower.transport.value(), b"\x05\x01\x00")
        self.lower.transport.clear()
        self.lower.protocol.dataReceived(b"\x05\x00")
        self.assertEqual(self.lower.transport.value(),
                         b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
        self.lower.protocol.dataReceived(_reply(0, host, port))

    def test_queued_until_associated_then_framed(self) -> None:
        dest = Destination.udp("8.8.8.8", 53)
        self.session.send(b"one", dest)
        self.session.send(b"two", Destination.udp("example.com", 7))
        self.assertEqual(self.reactor.ports, [])
        self.associate()
        port = self.reactor.ports[0]
        self.assertEqual(port.written, [
            (codec.build_datagram("8.8.8.8", 53, b"one"), ("127.0.0.1", 5555)),
            (codec.build_datagram("example.com", 7, b"two"), ("127.0.0.1", 5555))])
        self.session.send(b"three", dest)
        self.assertEqual(port.written[-1][0], codec.build_datagram("8.8.8.8", 53, b"three"))

    def test_replies_with_their_source_only_from_the_relay(self) -> None:
        self.associate()
        proto = self.reactor.ports[0].protocol
        proto.datagramReceived(codec.build_datagram("8.8.8.8", 53, b"answer"),
                               ("127.0.0.1", 5555))
        proto.datagramReceived(codec.build_datagram("8.8.8.8", 53, b"spoof"),
                               ("127.0.0.1", 5556))
        proto.datagramReceived(b"\x00\x00\x01" + codec.encode_address("1.1.1.1", 1) + b"frag",
                               ("127.0.0.1", 5555))
        proto.datagramReceived(b"\x00", ("127.0.0.1", 5555))
        self.assertEqual(self.got, [(b"answer", Destination.udp("8.8.8.8", 53))])

    def test_any_address_means_the_server(self) -> None:
        self.associate("0.0.0.0", 6000)
        self.session.send(b"x", Destination.udp("1.1.1.1", 1))
        self.assertEqual(self.reactor.ports[0].written[0][1], ("192.0.2.7", 6000))

    def test_control_close_ends_the_session(self) -> None:
        self.associate()
        self.lower.protocol.connectionLost(_done())
        self.assertEqual(self.closed, [True])
        self.assertFalse(self.reactor.ports[0].listening)
        self.session.send(b"late", Destination.udp("1.1.1.1", 1))
        self.assertEqual(self.reactor.ports[0].written, [])

    def test_close(self) -> None:
        self.associate()
        self.session.close()
        self.assertTrue(self.lower.transport.disconnecting)
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertEqual(self.closed, [])

    def test_refused_associate_ends_the_session(self) -> None:
        lines = log_lines(self, "vtwist.socks")
        self.session.send(b"x", Destination.udp("1.1.1.1", 1))
        self.lower.protocol.dataReceived(b"\x05\x00" + _reply(7))
        self.assertEqual(self.closed, [True])
        self.assertEqual(self.reactor.ports, [])
        self.assertTrue(any("command not supported (7)" in line for line in lines), lines)

    def test_tcp_only_endpoint_for_udp(self) -> None:
        d = self.outbound.endpointFor(Destination.udp("1.1.1.1", 1)).connect(_factory(None))
        self.failureResultOf(d, ConnectError)


class SettingsTests(ConfigErrorMixin, SynchronousTestCase):
    def config(self, settings: Any) -> Any:
        return parse_config({"inbounds": [], "outbounds": [
            {"protocol": "socks", "settings": settings}]}).outbounds[0]

    def test_servers_and_users(self) -> None:
        out = self.config({"servers": [
            {"address": "[::1]", "port": 1080,
             "users": [{"user": "alice", "pass": "s3cret", "level": 1, "email": "a@x"}]},
            {"address": "proxy.example", "port": "1081"}]})
        self.assertEqual(out.settings.servers, [
            UpstreamServer("::1", 1080, [UpstreamUser("alice", "s3cret", 1, "a@x")]),
            UpstreamServer("proxy.example", 1081, [])])

    def test_errors(self) -> None:
        for settings, where in (({"servers": []}, "servers"),
                                ({}, "servers"),
                                ({"servers": [{"port": 1}]}, "address"),
                                ({"servers": [{"address": "a", "port": 0}]}, "port"),
                                ({"servers": [{"address": "a", "port": 1,
                                               "users": [{"user": "u" * 256}]}]}, "user")):
            with self.assertRaises(Exception) as e:
                self.config(settings)
            self.assertIn(where, str(e.exception))

    def test_round_robin_servers(self) -> None:
        outbound = SocksOutbound(Clock(), "", UpstreamSettings(
            [UpstreamServer("a", 1), UpstreamServer("b", 2)]))
        self.assertEqual([outbound.picker.pick().address for _ in range(3)], ["a", "b", "a"])
