"""VMessClientEndpoint: header with the first payload, half-close, producers, ends."""

from __future__ import annotations

import os
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, protocol
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.freedom.outbound import FreedomOutbound
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess.body import BodyEncoder
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.handshake import RequestParsed, ServerHandshake
from vtwist.proxy.vmess.outbound import VMessOutbound
from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
from vtwist.proxy.vmess.server import VMessServerFactory, VMessServerState
from vtwist.proxy.vmess.settings import VMessOutboundSettings, VMessServer
from vtwist.proxy.vmess.users import Account, UserTable
from vtwist.testing.doubles import HalfCloseTransport, log_lines
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService

NOW = 1_700_000_000.0


class FakeEndpoint:
    """Connects the factory's protocol to a HalfCloseTransport at once."""

    def __init__(self) -> None:
        self.transport = HalfCloseTransport()
        self.protocol: Any = None

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


class App(protocol.Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseApp(App):
    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def readConnectionLost(self) -> None:
        self.eof = True

    def writeConnectionLost(self) -> None:
        pass


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.account = Account(os.urandom(16), security="aes-128-gcm")
        self.lower = FakeEndpoint()
        self.dest = Destination.tcp("example.com", 80)

    def open(self, app_cls: type = App, account: Account | None = None,
             command: int = H.CMD_TCP) -> Any:
        ep = VMessClientEndpoint(self.lower, account or self.account, self.dest,
                                 reactor=self.clock, clock=lambda: NOW, command=command)
        return self.successResultOf(ep.connect(protocol.Factory.forProtocol(app_cls)))

    def server_side(self, wire: bytes) -> RequestParsed:
        hs = ServerHandshake(UserTable([self.account]), AuthIDFilter(), SessionHistory())
        result = hs.feed(wire, NOW)
        self.assertIsInstance(result, RequestParsed)
        return result

    def test_header_goes_with_first_payload(self) -> None:
        app = self.open()
        self.assertEqual(self.lower.transport.value(), b"")
        app.transport.write(b"hello")
        wire = self.lower.transport.value()
        req = self.server_side(wire)
        self.assertEqual(req.destination, self.dest)
        self.assertEqual(req.body_decoder().feed(req.leftover), [b"hello"])
        self.clock.advance(1)  # no second header
        self.assertEqual(self.lower.transport.value(), wire)

    def test_header_alone_after_delay(self) -> None:
        self.open()
        self.clock.advance(0.05)
        self.assertEqual(self.lower.transport.value(), b"")
        self.clock.advance(0.06)
        req = self.server_side(self.lower.transport.value())
        self.assertEqual(req.leftover, b"")

    def test_half_close_sends_end_of_stream(self) -> None:
        app = self.open()
        app.transport.write(b"x")
        app.transport.loseWriteConnection()
        self.assertFalse(self.lower.transport.writeClosed)  # TCP stays open (like 4.34)
        self.assertFalse(self.lower.transport.disconnecting)
        req = self.server_side(self.lower.transport.value())
        dec = req.body_decoder()
        self.assertEqual(dec.feed(req.leftover), [b"x"])
        self.assertTrue(dec.eof)

    def test_producer_registration_passes_through(self) -> None:
        app = self.open()

        @implementer(IPushProducer)
        class P:
            def pauseProducing(self) -> None: ...
            def resumeProducing(self) -> None: ...
            def stopProducing(self) -> None: ...

        p = P()
        app.transport.registerProducer(p, True)
        self.assertIs(self.lower.transport.producer, p)
        app.transport.pauseProducing()
        self.assertEqual(self.lower.transport.producerState, "paused")
        app.transport.unregisterProducer()
        self.assertIsNone(self.lower.transport.producer)

    def _respond(self, app: Any, payloads: list[bytes], eos: bool) -> RequestParsed:
        app.transport.write(b"req")
        req = self.server_side(self.lower.transport.value())
        header, enc = req.response_writer()
        wire = header + b"".join(b"".join(enc.encode(p)) for p in payloads)
        if eos:
            wire += b"".join(enc.end())
        for i in range(0, len(wire), 7):  # in small pieces
            self.lower.protocol.dataReceived(wire[i:i + 7])
        return req

    def test_response_and_end_of_stream_half_close(self) -> None:
        app = self.open(HalfCloseApp)
        self._respond(app, [b"one", b"two"], eos=True)
        self.assertEqual(b"".join(app.data), b"onetwo")
        self.assertTrue(app.eof)
        self.assertFalse(self.lower.transport.disconnecting)

    def test_end_of_stream_closes_plain_protocol(self) -> None:
        app = self.open(App)
        self._respond(app, [b"one"], eos=True)
        self.assertTrue(self.lower.transport.disconnecting)
        self.lower.protocol.connectionLost(None)
        self.assertTrue(app.lost.check(ConnectionDone))

    def test_close_at_chunk_boundary_is_normal(self) -> None:
        app = self.open(App)
        self._respond(app, [b"one"], eos=False)
        self.lower.protocol.connectionLost(None)
        self.assertTrue(app.lost.check(ConnectionDone))

    def test_close_mid_chunk_is_an_error(self) -> None:
        app = self.open(App)
        app.transport.write(b"req")
        req = self.server_side(self.lower.transport.value())
        header, enc = req.response_writer()
        self.lower.protocol.dataReceived(header + b"".join(enc.encode(b"abcdef"))[:-3])
        self.lower.protocol.connectionLost(None)
        self.assertTrue(app.lost.check(ConnectionLost))

    def test_close_before_response_is_an_error(self) -> None:
        app = self.open(App)
        self.lower.protocol.connectionLost(None)
        self.assertTrue(app.lost.check(ConnectionLost))

    def test_wrong_response_v_aborts(self) -> None:
        app = self.open(App)
        app.transport.write(b"req")
        req = self.server_side(self.lower.transport.value())
        rk, riv = req.response_key, req.response_iv
        bad = H.seal_response_header(rk, riv, H.encode_response_plain(
            (req.header.response_v + 1) % 256))
        self.lower.protocol.dataReceived(bad)
        self.assertTrue(self.lower.transport.disconnecting)
        self.assertEqual(app.data, [])

    def test_switch_account_command_logged(self) -> None:
        logs = log_lines(self)
        app = self.open(App)
        app.transport.write(b"req")
        req = self.server_side(self.lower.transport.value())
        cmd = H.SwitchAccount("", 10086, bytes(range(16)), 4, 1, 5)
        plain = H.encode_response_plain(req.header.response_v, 0, H.CMD_SWITCH_ACCOUNT,
                                        H.encode_switch_account(cmd))
        enc = BodyEncoder(req.security, req.option, req.response_key, req.response_iv)
        self.lower.protocol.dataReceived(
            H.seal_response_header(req.response_key, req.response_iv, plain)
            + b"".join(enc.encode(b"body")))
        self.assertEqual(app.data, [b"body"])
        self.assertTrue(any("SwitchAccount" in line and "10086" in line for line in logs))

    def test_legacy_account(self) -> None:
        account = Account(os.urandom(16), alter_id=4, security="chacha20-poly1305")
        self.account = account
        app = self.open(HalfCloseApp, account)
        req = self._respond(app, [b"legacy"], eos=True)
        self.assertFalse(req.aead)
        self.assertEqual(b"".join(app.data), b"legacy")

    def test_destination_vmess_cannot_carry_fails_the_connect(self) -> None:
        for host in ("bücher.example", "a" * 256):
            self.dest = Destination.tcp(host, 80)
            ep = VMessClientEndpoint(self.lower, self.account, self.dest, reactor=self.clock)
            f = self.failureResultOf(ep.connect(protocol.Factory.forProtocol(App)))
            self.assertTrue(f.check(ConnectError), host)
        self.assertIsNone(self.lower.protocol)  # nothing was connected

    def test_udp_datagrams_keep_boundaries(self) -> None:
        self.dest = Destination.udp("1.1.1.1", 53)
        app = self.open(App, command=H.CMD_UDP)
        app.transport.write(b"d1")
        app.transport.write(b"d22")
        req = self.server_side(self.lower.transport.value())
        self.assertEqual(req.command, H.CMD_UDP)
        self.assertEqual(req.body_decoder().feed(req.leftover), [b"d1", b"d22"])
        header, enc = req.response_writer()
        self.lower.protocol.dataReceived(header + b"".join(enc.encode(b"r1"))
                                         + b"".join(enc.encode(b"r22")))
        self.assertEqual(app.data, [b"r1", b"r22"])


class _PendingEndpoint:
    """Connects only when the test says so (``succeed``/``fail``)."""

    def __init__(self) -> None:
        self.transport = HalfCloseTransport()
        self.deferred: defer.Deferred[Any] = defer.Deferred()
        self.factory: Any = None

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.factory = factory
        return self.deferred

    def succeed(self) -> Any:
        proto = self.factory.buildProtocol(None)
        proto.makeConnection(self.transport)
        self.deferred.callback(proto)
        return proto


class PacketSessionTests(SynchronousTestCase):
    """VMess UDP from the outbound side: one VMess UDP connection per destination."""

    def setUp(self) -> None:
        self.account = Account(os.urandom(16), security="aes-128-gcm")
        settings = VMessOutboundSettings([VMessServer("127.0.0.1", 1, [self.account])])
        self.outbound = VMessOutbound(Clock(), "out", settings)
        self.endpoints: list[_PendingEndpoint] = []

        def transport_endpoint(server: Any) -> _PendingEndpoint:
            self.endpoints.append(_PendingEndpoint())
            return self.endpoints[-1]
        self.outbound.transportEndpoint = transport_endpoint  # type: ignore[method-assign]
        self.replies: list[tuple[bytes, Destination]] = []
        self.session = self.outbound.packetSession(
            lambda data, src: self.replies.append((data, src)), lambda: None)
        self.dest = Destination.udp("8.8.8.8", 53)

    def test_queued_until_connected_then_datagrams(self) -> None:
        for i in range(70):
            self.session.send(b"q%d" % i, self.dest)
        self.assertEqual(len(self.endpoints), 1)  # one connection per destination
        lower = self.endpoints[0]
        vmess = lower.succeed()
        self.session.send(b"late", self.dest)
        hs = ServerHandshake(UserTable([self.account]), AuthIDFilter(), SessionHistory())
        req = hs.feed(lower.transport.value(), time.time())
        self.assertIsInstance(req, RequestParsed)
        self.assertEqual((req.command, req.destination), (H.CMD_UDP, self.dest))
        got = req.body_decoder().feed(req.leftover)
        self.assertEqual(got, [b"q%d" % i for i in range(64)] + [b"late"])  # queue capped
        header, enc = req.response_writer()
        vmess.dataReceived(header + b"".join(enc.encode(b"answer")))
        self.assertEqual(self.replies, [(b"answer", self.dest)])
        self.session.close()
        self.assertTrue(lower.transport.disconnecting)
        self.session.send(b"after close", self.dest)
        self.assertEqual(len(self.endpoints), 1)

    def test_failed_connect_drops_queue_and_retries_later(self) -> None:
        self.session.send(b"lost", self.dest)
        self.endpoints[0].deferred.errback(ConnectError("refused"))
        self.session.send(b"again", self.dest)
        self.assertEqual(len(self.endpoints), 2)
        self.endpoints[1].succeed()
        req = ServerHandshake(UserTable([self.account]), AuthIDFilter(), SessionHistory()
                              ).feed(self.endpoints[1].transport.value(), time.time())
        self.assertEqual(req.body_decoder().feed(req.leftover), [b"again"])


class _Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello through vmess " + request.uri


class AgentThroughVMess(TestCase):
    """The docstring's example: twisted.web.client.Agent over VMessClientEndpoint."""

    async def _fetch(self) -> None:
        from twisted.internet import reactor

        web = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(_Page()))
        self.addCleanup(web.stopListening)
        account = Account(os.urandom(16), security="chacha20-poly1305")
        factory = VMessServerFactory(
            VMessServerState([account]), TunnelService(Dispatcher([FreedomOutbound(reactor)]), reactor))
        vmess = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory)
        self.addCleanup(vmess.stopListening)

        @implementer(IAgentEndpointFactory)
        class ThroughVMess:
            def endpointForURI(self, uri: Any) -> VMessClientEndpoint:
                lower = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", vmess.getHost().port)
                return VMessClientEndpoint(lower, account,
                                           Destination.tcp(uri.host.decode(), uri.port),
                                           reactor=reactor)

        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, ThroughVMess(), pool=pool)
        url = f"http://127.0.0.1:{web.getHost().port}/page".encode()
        response = await agent.request(b"GET", url)
        body = await readBody(response)
        self.assertEqual(body, b"hello through vmess /page")
        self.assertEqual(factory.accepted[(True, 4, 1)], 1)
        await pool.closeCachedConnections()

    def test_agent_fetches_page(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._fetch())


class ClientFuzz(SynchronousTestCase):
    """Random bytes from a 'server': never an exception, never data to the application."""

    @settings(max_examples=150, deadline=None)
    @given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(1, 300), max_size=10))
    def test_random_response(self, data: bytes, cuts: list[int]) -> None:
        lower = FakeEndpoint()
        ep = VMessClientEndpoint(lower, Account(os.urandom(16)), Destination.tcp("a.b", 1),
                                 reactor=Clock(), clock=lambda: NOW)
        app = self.successResultOf(ep.connect(protocol.Factory.forProtocol(App)))
        app.transport.write(b"hi")
        pos = 0
        for cut in cuts + [len(data)]:
            lower.protocol.dataReceived(data[pos:pos + cut])
            pos += cut
            if pos >= len(data):
                break
        lower.protocol.connectionLost(None)
        self.assertEqual(app.data, [])
        self.assertTrue(app.lost.check(ConnectionLost))
