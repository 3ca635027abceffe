"""The SOCKS server protocol in memory: StringTransport, task.Clock, a hand-driven outbound.

Each bad-input case checks the reply bytes (or their absence), that the connection is closed,
that exactly one log line explains it, that nothing logged a traceback, and that no timer or
outbound connection is left behind.
"""

from __future__ import annotations

import errno
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import error
from twisted.internet.address import IPv6Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.policy import LevelPolicy
from vtwist.proxy.socks import codec
from vtwist.proxy.socks.server import (
    Phase,
    SocksServerFactory,
    SocksServerProtocol,
    format_address,
    reply_for_failure,
)
from vtwist.testing.doubles import EchoRecorder
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService

from .socks_helpers import FakeOutbound, HalfCloseTransport, LogCapture

POLICY = LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)
GREETING = codec.client_greeting()
OK_METHOD = b"\x05\x00"


def connect_request(host: str = "127.0.0.1", port: int = 80) -> bytes:
    return codec.client_request(codec.CMD_CONNECT, host, port)


class ServerTestBase(SynchronousTestCase):
    accounts: dict[bytes, bytes] | None = None
    udp = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.outbound = FakeOutbound()
        self.dispatcher = Dispatcher([self.outbound])
        self.factory = SocksServerFactory(
            TunnelService(self.dispatcher, self.clock), tag="socks-in", accounts=self.accounts, udp=self.udp,
            listen="127.0.0.1", policy=POLICY)
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.protocol, self.transport = self.connect()

    def connect(self) -> tuple[SocksServerProtocol, HalfCloseTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def lose(self, protocol: Any = None) -> None:
        """The client connection goes away (as the reactor would report it)."""
        protocol = protocol or self.protocol
        protocol.connectionLost(Failure(error.ConnectionDone()))

    def written(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def assertCleanEnd(self, lines: int = 1) -> None:
        """Closed, ``lines`` log lines, no traceback, no timer, no open outbound attempt."""
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.logs.lines()), lines, self.logs.lines())
        self.assertEqual(self.logs.failures(), [])
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for pending in self.outbound.connects:
            self.assertTrue(pending.cancelled or pending.deferred.called)
        self.assertEqual(self.flushLoggedErrors(), [])

    def handshake(self, host: str = "127.0.0.1", port: int = 80) -> Any:
        self.protocol.dataReceived(GREETING)
        self.assertEqual(self.written(), OK_METHOD)
        self.protocol.dataReceived(connect_request(host, port))
        return self.outbound.connects[-1]


class ConnectTests(ServerTestBase):
    def test_connect_ipv4_and_relay(self) -> None:
        pending = self.handshake("10.1.2.3", 8080)
        self.assertEqual(pending.destination, Destination.tcp("10.1.2.3", 8080))
        # a client waiting for the reply is not paused; one that sends on is (next test)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.written(), b"")  # no reply before the outcome is known
        pending.succeed(bound=("10.0.0.5", 40000))
        reply = codec.parse_reply(self.written())
        self.assertEqual(reply[:3], (0, "10.0.0.5", 40000))
        self.assertEqual(self.transport.producerState, "producing")
        self.assertIs(self.protocol.phase, Phase.TUNNEL)
        # Both ways, with the transports producing for each other.
        self.protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(pending.transport.value(), b"GET / HTTP/1.0\r\n\r\n")
        pending.protocol.dataReceived(b"HTTP/1.0 200 OK\r\n")
        self.assertEqual(self.written(), b"HTTP/1.0 200 OK\r\n")
        self.assertIs(self.transport.producer, pending.transport)
        self.assertIs(pending.transport.producer, self.transport)
        # The target closes: the client is closed after its buffer drains; nothing remains.
        pending.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.logs.lines(), [])

    def test_access_line(self) -> None:
        self.handshake("example.com", 443)
        accepted = [e for e in self.logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertEqual(len(accepted), 1)
        self.assertEqual(accepted[0]["line"],
                         "from 127.0.0.1:50000 accepted tcp:example.com:443 [socks-in >> out]")

    def test_connect_domain_and_ipv6(self) -> None:
        self.assertEqual(self.handshake("example.com", 443).destination,
                         Destination.tcp("example.com", 443))
        protocol, _ = self.connect()
        protocol.dataReceived(GREETING + connect_request("2001:db8::1", 22))
        self.assertEqual(self.outbound.connects[-1].destination, Destination.tcp("2001:db8::1", 22))

    def test_pipelined_handshake_and_early_data(self) -> None:
        """Greeting, request and payload in one segment; more payload while connecting."""
        self.protocol.dataReceived(GREETING + connect_request() + b"early ")
        self.assertEqual(self.transport.producerState, "paused")  # sent on: paused
        self.protocol.dataReceived(b"later")  # arrives although paused (already read)
        pending = self.outbound.connects[0]
        pending.succeed()
        self.assertEqual(pending.transport.value(), b"early later")
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.written()[:2], b"\x05\x00")

    def test_target_banner_before_attach(self) -> None:
        """Bytes the target sends before the reply is written reach the client after it."""
        pending = self.handshake()
        protocol = pending.factory.buildProtocol(None)
        pending.protocol = protocol
        pending.transport = HalfCloseTransport()
        protocol.makeConnection(pending.transport)
        protocol.dataReceived(b"SSH-2.0-banner\r\n")
        pending.deferred.callback(protocol)
        data = self.written()
        reply = codec.parse_reply(data)
        self.assertEqual(reply[0], 0)
        self.assertEqual(data[reply[3]:], b"SSH-2.0-banner\r\n")

    def test_half_close_in_relay(self) -> None:
        """The client's FIN half-closes the target; the reply still flows back."""
        pending = self.handshake()
        pending.succeed()
        self.written()
        self.protocol.readConnectionLost()
        self.assertTrue(pending.transport.writeClosed)
        self.assertFalse(self.transport.disconnecting)
        pending.protocol.dataReceived(b"the whole reply")
        self.assertEqual(self.written(), b"the whole reply")
        pending.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(pending.transport.disconnecting)

    def test_half_close_while_connecting(self) -> None:
        self.protocol.dataReceived(GREETING + connect_request() + b"request")
        self.protocol.readConnectionLost()
        pending = self.outbound.connects[0]
        pending.succeed()
        self.assertEqual(pending.transport.value(), b"request")
        self.assertTrue(pending.transport.writeClosed)
        self.assertFalse(self.transport.disconnecting)

    def test_client_leaves_while_connecting(self) -> None:
        pending = self.handshake()
        self.lose()
        self.assertTrue(pending.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.logs.failures(), [])

    def test_socks4_and_4a(self) -> None:
        self.protocol.dataReceived(codec.client_request4(1, "10.0.0.1", 80, b"me"))
        self.outbound.connects[-1].succeed(bound=("10.0.0.5", 40000))
        self.assertEqual(self.written(), b"\x00\x5a\x9c\x40\x0a\x00\x00\x05")
        protocol, transport = self.connect()
        protocol.dataReceived(codec.client_request4(1, "example.org", 80))
        self.assertEqual(self.outbound.connects[-1].destination, Destination.tcp("example.org", 80))
        self.outbound.connects[-1].fail(error.ConnectionRefusedError())
        self.assertEqual(transport.value(), b"\x00\x5b\x00\x00\x00\x00\x00\x00")
        self.assertTrue(transport.disconnecting)


class FailureReplyTests(ServerTestBase):
    """The outbound fails: the reply code says why, then a clean close."""

    def check(self, exc: Exception, code: int) -> None:
        pending = self.handshake()
        pending.fail(exc)
        reply = codec.parse_reply(self.written())
        self.assertEqual(reply[0], code)
        self.assertCleanEnd()

    def test_refused(self) -> None:
        self.check(error.ConnectionRefusedError(), 0x05)

    def test_refused_errno(self) -> None:
        self.check(error.ConnectError(errno.ECONNREFUSED, "refused"), 0x05)

    def test_host_unreachable_dns(self) -> None:
        self.check(error.DNSLookupError("no.such.host"), 0x04)

    def test_host_unreachable_errno(self) -> None:
        self.check(error.ConnectError(errno.EHOSTUNREACH, "no route"), 0x04)

    def test_network_unreachable(self) -> None:
        self.check(error.NoRouteError(errno.ENETUNREACH, "network is unreachable"), 0x03)

    def test_timeout(self) -> None:
        self.check(error.TimeoutError(), 0x06)

    def test_tcp_timed_out(self) -> None:
        self.check(error.TCPTimedOutError(errno.ETIMEDOUT, "timed out"), 0x06)

    def test_general_failure(self) -> None:
        self.check(ValueError("surprise"), 0x01)

    def test_target_never_answers(self) -> None:
        """The connect timeout cancels the attempt and answers 0x06."""
        pending = self.handshake()
        self.clock.advance(self.factory.policy.connect_timeout - 0.1)
        self.assertEqual(self.written(), b"")
        self.clock.advance(0.2)
        self.assertTrue(pending.cancelled)
        self.assertEqual(codec.parse_reply(self.written())[0], 0x06)
        self.assertCleanEnd()

    def test_no_outbound(self) -> None:
        self.dispatcher.default = None
        self.protocol.dataReceived(GREETING + connect_request())
        self.assertEqual(codec.parse_reply(self.written()[2:])[0], 0x01)
        self.assertCleanEnd()

    def test_client_bytes_after_failure_ignored(self) -> None:
        """While connecting, the client's bytes go straight to the tunnel; once the failure
        reply closed the connection they (and the client's half-close) go nowhere."""
        pending = self.handshake()
        self.assertEqual(self.protocol.dataReceived, self.protocol.tunnel.received)
        pending.fail(error.ConnectionRefusedError())
        self.assertEqual(codec.parse_reply(self.written())[0], 0x05)
        self.assertIs(self.protocol.phase, Phase.CLOSED)
        self.assertNotIn("dataReceived", vars(self.protocol))  # the protocol's own again
        self.assertNotIn("readConnectionLost", vars(self.protocol))
        self.protocol.dataReceived(b"late bytes")
        self.protocol.readConnectionLost()
        self.assertEqual(self.written(), b"")
        self.assertCleanEnd()

    def test_mapping_direct(self) -> None:
        self.assertEqual(reply_for_failure(Failure(OSError(errno.ENETUNREACH, "x"))), 0x03)
        self.assertEqual(reply_for_failure(Failure(error.NoRouteError())), 0x04)
        self.assertEqual(reply_for_failure(Failure(error.UnknownHostError())), 0x04)


class BadInputTests(ServerTestBase):
    def test_random_bytes(self) -> None:
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.written(), b"")
        self.assertCleanEnd()

    def test_wrong_version_tls_hello(self) -> None:
        self.protocol.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertCleanEnd()

    def test_truncated_greeting(self) -> None:
        self.protocol.dataReceived(b"\x05\x03\x00")
        self.protocol.readConnectionLost()
        self.assertEqual(self.written(), b"")
        self.assertCleanEnd()

    def test_truncated_request(self) -> None:
        self.protocol.dataReceived(GREETING + b"\x05\x01\x00\x01\x7f\x00")
        self.protocol.readConnectionLost()
        self.assertEqual(self.written(), OK_METHOD)
        self.assertCleanEnd()

    def test_truncated_then_reset(self) -> None:
        """The client vanishes mid-handshake without a FIN: no log noise, nothing left."""
        self.protocol.dataReceived(GREETING[:2])
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.logs.failures(), [])

    def test_silent_client(self) -> None:
        """Nothing sent: the policy's handshake timeout (4 s) closes the connection."""
        self.clock.advance(3.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertIn("handshake timed out", self.logs.lines()[0])
        self.assertCleanEnd()

    def test_slow_handshake_times_out(self) -> None:
        """The timeout covers the whole handshake, not each read."""
        for piece in (b"\x05", b"\x01", b"\x00", b"\x05\x01"):
            self.clock.advance(1)
            self.protocol.dataReceived(piece)
        self.clock.advance(0.5)
        self.assertTrue(self.transport.disconnecting)
        self.assertCleanEnd()

    def test_wrong_request_version(self) -> None:
        self.protocol.dataReceived(GREETING + b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
        self.assertEqual(self.written()[2:4], b"\x05\x01")
        self.assertCleanEnd()

    def test_bind_unsupported(self) -> None:
        self.protocol.dataReceived(GREETING + codec.client_request(codec.CMD_BIND, "1.2.3.4", 1))
        self.assertEqual(codec.parse_reply(self.written()[2:])[0], 0x07)
        self.assertCleanEnd()

    def test_unknown_command(self) -> None:
        self.protocol.dataReceived(GREETING + codec.client_request(0x09, "1.2.3.4", 1))
        self.assertEqual(codec.parse_reply(self.written()[2:])[0], 0x07)
        self.assertCleanEnd()

    def test_udp_disabled(self) -> None:
        self.protocol.dataReceived(GREETING + codec.client_request(3, "0.0.0.0", 0))
        self.assertEqual(codec.parse_reply(self.written()[2:])[0], 0x07)
        self.assertIn("UDP is not enabled", self.logs.lines()[0])
        self.assertCleanEnd()

    def test_unsupported_address_type(self) -> None:
        self.protocol.dataReceived(GREETING + b"\x05\x01\x00\x02abcd\x00\x50")
        self.assertEqual(self.written()[2:4], b"\x05\x08")
        self.assertCleanEnd()

    def test_invalid_domain(self) -> None:
        self.protocol.dataReceived(GREETING + b"\x05\x01\x00\x03\x05a b c\x00\x50")
        self.assertEqual(self.written()[2:4], b"\x05\x01")
        self.assertCleanEnd()

    def test_oversized_domain_length(self) -> None:
        """A declared domain length the client never fills: the handshake timeout ends it."""
        self.protocol.dataReceived(GREETING + b"\x05\x01\x00\x03\xff" + b"a" * 50)
        self.clock.advance(4)
        self.assertCleanEnd()

    def test_socks4a_oversized_domain(self) -> None:
        self.protocol.dataReceived(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"a" * 400)
        self.assertEqual(self.written(), b"\x00\x5b\x00\x00\x00\x00\x00\x00")
        self.assertCleanEnd()

    def test_socks4_bind_rejected(self) -> None:
        self.protocol.dataReceived(codec.client_request4(2, "1.2.3.4", 80))
        self.assertEqual(self.written()[:2], b"\x00\x5b")
        self.assertCleanEnd()

    def test_data_after_close_ignored(self) -> None:
        self.protocol.dataReceived(b"\x00garbage")
        self.protocol.dataReceived(b"more garbage")
        self.protocol.readConnectionLost()
        self.assertCleanEnd()


class AuthTests(ServerTestBase):
    accounts = {b"alice": b"secret"}

    def test_accepted(self) -> None:
        self.protocol.dataReceived(codec.client_greeting((0, 2)))
        self.assertEqual(self.written(), b"\x05\x02")
        self.protocol.dataReceived(codec.client_credentials(b"alice", b"secret") +
                                   connect_request())
        self.assertEqual(self.written(), b"\x01\x00")
        self.assertEqual(len(self.outbound.connects), 1)
        accepted = [e["line"] for e in self.logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertEqual(accepted, ["from 127.0.0.1:50000 accepted tcp:127.0.0.1:80 "
                                    "[socks-in >> out] email: alice"])

    def test_wrong_password(self) -> None:
        self.protocol.dataReceived(codec.client_greeting((2,)) +
                                   codec.client_credentials(b"alice", b"guess") + connect_request())
        self.assertEqual(self.written(), b"\x05\x02\x01\x01")
        self.assertEqual(self.outbound.connects, [])
        self.assertIn("invalid username or password", self.logs.lines()[0])
        self.assertCleanEnd()

    def test_unknown_user(self) -> None:
        self.protocol.dataReceived(codec.client_greeting((2,)) +
                                   codec.client_credentials(b"mallory", b"secret"))
        self.assertEqual(self.written(), b"\x05\x02\x01\x01")
        self.assertCleanEnd()

    def test_client_without_password_method(self) -> None:
        self.protocol.dataReceived(codec.client_greeting((0,)))
        self.assertEqual(self.written(), b"\x05\xff")
        self.assertCleanEnd()

    def test_socks4_refused_when_auth_required(self) -> None:
        self.protocol.dataReceived(codec.client_request4(1, "1.2.3.4", 80))
        self.assertEqual(self.written()[:2], b"\x00\x5b")
        self.assertEqual(self.outbound.connects, [])
        self.assertCleanEnd()

    def test_no_auth_server_refuses_password_only_client(self) -> None:
        self.factory.accounts = None
        self.protocol.dataReceived(codec.client_greeting((2,)))
        self.assertEqual(self.written(), b"\x05\xff")
        self.assertCleanEnd()


class MiscTests(SynchronousTestCase):
    def test_format_address(self) -> None:
        self.assertEqual(format_address(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(format_address(IPv6Address("TCP", "::ffff:1.2.3.4", 5)), "1.2.3.4:5")
        self.assertEqual(format_address(None), "unknown")


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class IOSimTests(SynchronousTestCase):
    """Client, proxy and target joined by iosim pumps: the whole path in memory."""

    def test_echo_through_the_proxy_then_close(self) -> None:
        clock = Clock()
        outbound = FakeOutbound()
        factory = SocksServerFactory(TunnelService(Dispatcher([outbound]), clock), policy=POLICY)
        server = factory.buildProtocol(None)
        client = _Client()
        front = iosim.connect(server, iosim.makeFakeServer(server), client,
                              iosim.makeFakeClient(client), clock=clock)
        client.transport.write(GREETING + connect_request("192.0.2.7", 7) + b"hello ")
        front.flush()
        pending = outbound.connects[0]
        relay_side = pending.factory.buildProtocol(None)
        target = EchoRecorder()
        back = iosim.connect(target, iosim.makeFakeServer(target), relay_side,
                             iosim.makeFakeClient(relay_side), clock=clock)
        pending.deferred.callback(relay_side)

        def pump() -> None:
            for _ in range(50):
                if not (front.pump() | back.pump()):
                    return

        pump()
        client.transport.write(b"world")
        pump()
        self.assertEqual(client.received[:2], OK_METHOD)
        reply = codec.parse_reply(client.received[2:])
        self.assertEqual(reply[0], 0)
        self.assertEqual(client.received[2 + reply[3]:], b"hello world")
        client.transport.loseConnection()
        pump()
        self.assertIsNotNone(target.lost)
        self.assertEqual(clock.getDelayedCalls(), [])


class FuzzTests(SynchronousTestCase):
    """Arbitrary client bytes, however they end: at most one line, nothing left behind."""

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([
        GREETING, codec.client_greeting((2,)), connect_request(), b"\x05\x01\x00\x03",
        codec.client_credentials(b"alice", b"secret"), codec.client_request4(1, "a.b", 1)])),
        max_size=6), st.sampled_from(["fin", "timeout", "lost"]), st.booleans())
    def test_random_input(self, chunks: list[bytes], ending: str, auth: bool) -> None:
        clock = Clock()
        outbound = FakeOutbound()
        factory = SocksServerFactory(TunnelService(Dispatcher([outbound]), clock), policy=POLICY,
                                     accounts={b"alice": b"secret"} if auth else None)
        protocol = factory.buildProtocol(None)
        transport = HalfCloseTransport()
        logs = LogCapture()
        try:
            protocol.makeConnection(transport)
            for chunk in chunks:
                protocol.dataReceived(chunk)
            if ending == "fin":
                protocol.readConnectionLost()
            elif ending == "timeout":
                clock.advance(POLICY.handshake + POLICY.connect_timeout + 1)
                self.assertTrue(transport.disconnecting)  # nobody lingers past the timeouts
            protocol.connectionLost(Failure(error.ConnectionDone()))
            self.assertEqual(clock.getDelayedCalls(), [])
            for pending in outbound.connects:
                self.assertTrue(pending.cancelled or pending.deferred.called)
            self.assertLessEqual(len(logs.lines()), 1, logs.lines())
            self.assertEqual(logs.failures(), [])
        finally:
            logs.stop()
