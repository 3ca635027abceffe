"""The tunnel service: a toy inbound needs only an IInbound and one tunnel call; early
bytes are replayed after resuming, so a pause the replay causes sticks."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer, verify

from tests.netutil import free_port
from vtwist.address import Destination, format_address
from vtwist.config import registry
from vtwist.config.loader import parse_config
from vtwist.config.registry import InboundSpec
from vtwist.interfaces import IDispatcher, IInbound, IInboundReply, IPacketSession
from vtwist.policy import LevelPolicy
from vtwist.service import build_service
from vtwist.testing.doubles import Collector, Echo, HalfCloseTransport, LogCapture
from vtwist.testing.tunnels import FakeOutbound
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.failures import ConnectFailure
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.packets import MAX_QUEUED, PacketQueue, PacketTunnel
from vtwist.tunnel.service import TunnelService

POLICY = LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)


# -- a toy inbound: "host port\n", then the stream -----------------------------------------
@implementer(IInboundReply)
class ToyReply:
    """The toy protocol answers nothing on success and hangs up on failure."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def succeeded(self, bound: Any) -> None:
        """Nothing to say."""

    def failed(self, kind: ConnectFailure, reason: Any) -> None:
        """Hang up."""
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class ToyProtocol(protocol.Protocol):
    """The first line names the destination; everything after it is the stream."""

    def __init__(self, factory: InboundFactory) -> None:
        self.factory = factory
        self.head = b""
        self.tunnel: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.received(data)
            return
        self.head += data
        if b"\n" in self.head:
            line, rest = self.head.split(b"\n", 1)
            host, port = line.decode().split()
            self.tunnel = self.factory.tunnels.openStream(
                self.transport, Destination.tcp(host, int(port)), ToyReply(self.transport),
                early=[rest] if rest else None, inbound_tag=self.factory.tag,
                source=format_address(self.transport.getPeer()))

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if self.tunnel is not None:
            self.tunnel.lost(reason)


class ToyFactory(InboundFactory):
    protocol = ToyProtocol  # type: ignore[assignment]


#: The registry reads ``inbound`` from this module.
inbound = InboundSpec("toy", lambda node: None,
                      lambda config, ctx: ToyFactory(ctx.tunnels, config.tag))


class ToyInboundTests(TestCase):
    """Registering a protocol is one registry entry; the rest is the tunnel's."""

    def setUp(self) -> None:
        registry.INBOUND_MODULES["toy"] = __name__
        self.addCleanup(registry.INBOUND_MODULES.pop, "toy")

    def test_spec_provides_iinbound(self) -> None:
        self.assertTrue(verify.verifyObject(IInbound, inbound))
        self.assertTrue(verify.verifyObject(IDispatcher, Dispatcher([])))

    @defer.inlineCallbacks
    def test_toy_inbound_relays_through_freedom(self) -> Any:
        echo = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(echo.stopListening)
        config = parse_config({
            "inbounds": [{"protocol": "toy", "port": free_port(), "listen": "127.0.0.1",
                          "tag": "toy-in"}],
            "outbounds": [{"protocol": "freedom", "tag": "direct"}]})
        service = build_service(config, reactor)
        logs = LogCapture()
        self.addCleanup(logs.stop)
        service.startService()
        self.addCleanup(service.stopService)
        port = (yield service.inbound_services[0].listening).getHost().port
        collector = Collector()
        client = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), collector)
        echo_port = echo.getHost().port
        client.transport.write(b"127.0.0.1 %d\nearly " % echo_port)
        client.transport.write(b"and late")
        yield collector.wait(len(b"early and late"))
        self.assertEqual(bytes(collector.buf), b"early and late")
        client.transport.loseConnection()
        accepted = [e for e in logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertIn(f"accepted tcp:127.0.0.1:{echo_port} [toy-in >> direct]",
                      accepted[0]["line"])


# -- held input: resume, then replay -------------------------------------------------------
class PausingTransport(HalfCloseTransport):
    """Pauses its producer once more than ``limit`` bytes were written (a full socket)."""

    limit = 10

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))


class StreamTunnelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.outbound = FakeOutbound()
        self.tunnels = TunnelService(Dispatcher([self.outbound]), self.clock)
        self.replies: list[Any] = []

    def open(self, early: list[bytes], wants_bound: bool | None = None
             ) -> tuple[Any, HalfCloseTransport]:
        transport = HalfCloseTransport()
        reply = self

        @implementer(IInboundReply)
        class Reply:
            if wants_bound is not None:
                wantsBound = wants_bound

            def succeeded(self, bound: Any) -> None:
                reply.replies.append(("ok", bound))

            def failed(self, kind: ConnectFailure, reason: Any) -> None:
                reply.replies.append(("failed", kind))
                transport.loseConnection()

        tunnel = self.tunnels.openStream(transport, Destination.tcp("example.com", 80), Reply(),
                                         early=early, policy=POLICY)
        return tunnel, transport

    def test_replay_pause_sticks(self) -> None:
        """A big early write that fills the outbound pauses the inbound, and stays paused
        (resuming after the replay would undo the pause)."""
        tunnel, inbound = self.open([b"x" * 100])
        self.assertEqual(inbound.producerState, "paused")
        pending = self.outbound.connects[0]
        proto = pending.factory.buildProtocol(None)  # the tunnel's RelayProtocolFactory
        target = PausingTransport()
        proto.makeConnection(target)
        pending.deferred.callback(proto)
        self.assertEqual(target.value(), b"x" * 100)
        self.assertEqual(inbound.producerState, "paused")
        self.assertEqual(self.replies[0][0], "ok")

    def test_small_replay_resumes(self) -> None:
        tunnel, inbound = self.open([b"hi"])
        tunnel.received(b" there")
        tunnel.eof()
        target = self.outbound.connects[0].succeed().transport
        self.assertEqual(target.value(), b"hi there")
        self.assertTrue(target.writeClosed)  # the held half-close went on too

    def test_bound_address_only_for_replies_that_use_it(self) -> None:
        """The outbound's local address (a getsockname) is asked only for a reply that uses
        it: SOCKS's does (absent means yes); a reply saying ``wantsBound = False`` gets
        None."""
        for wants, expected in ((None, True), (True, True), (False, False)):
            self.replies.clear()
            self.open([], wants_bound=wants)
            transport = self.outbound.connects[-1].succeed().transport
            self.assertEqual(self.replies[0][0], "ok")
            self.assertEqual(self.replies[0][1] is not None, expected, wants)
            if expected:
                self.assertEqual(self.replies[0][1], transport.getHost())

    def test_deadline_from_policy(self) -> None:
        tunnel, inbound = self.open([])
        self.clock.advance(POLICY.connect_timeout - 0.1)
        self.assertEqual(self.replies, [])
        self.clock.advance(0.2)
        self.assertTrue(self.outbound.connects[0].cancelled)
        self.assertEqual(self.replies, [("failed", ConnectFailure.TIMED_OUT)])
        self.assertTrue(inbound.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PacketTests(SynchronousTestCase):
    def test_queue_is_bounded(self) -> None:
        queue = PacketQueue()
        for i in range(MAX_QUEUED + 3):
            queue.push(i)
        self.assertEqual((len(queue), queue.dropped), (MAX_QUEUED, 3))
        self.assertEqual(queue.take(), list(range(MAX_QUEUED)))
        self.assertEqual(len(queue), 0)

    def test_idle_closes_once(self) -> None:
        clock = Clock()
        outbound = FakeOutbound()
        closes: list[int] = []
        tunnel = TunnelService(Dispatcher([outbound]), clock).openPackets(
            Destination.udp("1.1.1.1", 53), lambda *a: None, lambda: closes.append(1),
            idle_timeout=60)
        self.assertTrue(verify.verifyObject(IPacketSession, tunnel))
        self.assertIsInstance(tunnel, PacketTunnel)
        tunnel.send(b"q", Destination.udp("1.1.1.1", 53))
        clock.advance(60)
        self.assertEqual(closes, [])  # active in the first period
        outbound.sessions[0].onPacket(b"a", Destination.udp("1.1.1.1", 53))
        clock.advance(60)
        self.assertEqual(closes, [])
        clock.advance(60)
        self.assertEqual(closes, [1])
        self.assertTrue(outbound.sessions[0].closed)
        self.assertEqual(clock.getDelayedCalls(), [])
