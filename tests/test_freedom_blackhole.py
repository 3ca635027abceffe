"""freedom (domainStrategy, redirect, UDP) and blackhole (none, http) on real loopback sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vtwist.address import Destination
from vtwist.proxy.blackhole.outbound import HTTP_RESPONSE, BlackholeOutbound
from vtwist.proxy.blackhole.settings import BlackholeSettings
from vtwist.proxy.freedom import outbound as freedom_outbound
from vtwist.proxy.freedom.outbound import FreedomOutbound
from vtwist.proxy.freedom.settings import FreedomSettings
from vtwist.testing.doubles import CollectUntilClosed, UDPEcho
from vtwist.tunnel.packets import MAX_QUEUED


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello from %d" % self.transport.getHost().port)
        self.transport.loseConnection()


class FreedomTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.server = reactor.listenTCP(0, Factory.forProtocol(Greeter), interface="127.0.0.1")
        self.addCleanup(self.server.stopListening)
        self.port = self.server.getHost().port

    @defer.inlineCallbacks
    def fetch(self, outbound: FreedomOutbound, destination: Destination) -> Any:
        collector = CollectUntilClosed()
        yield outbound.endpointFor(destination).connect(Factory.forProtocol(lambda: collector))
        data = yield collector.done
        return data

    @defer.inlineCallbacks
    def test_ip_and_domain_as_is(self) -> Any:
        outbound = FreedomOutbound(reactor)
        expected = b"hello from %d" % self.port
        self.assertEqual((yield self.fetch(outbound, Destination.tcp("127.0.0.1", self.port))),
                         expected)
        self.assertEqual((yield self.fetch(outbound, Destination.tcp("localhost", self.port))),
                         expected)

    @defer.inlineCallbacks
    def test_use_ipv4_resolves_first(self) -> Any:
        outbound = FreedomOutbound(reactor, settings=FreedomSettings(domain_strategy="UseIPv4"))
        self.assertEqual((yield self.fetch(outbound, Destination.tcp("localhost", self.port))),
                         b"hello from %d" % self.port)

    @defer.inlineCallbacks
    def test_use_ipv6_refuses_ipv4_only_name(self) -> Any:
        """This machine's ``localhost`` has no IPv6 address: UseIPv6 must not fall back."""
        outbound = FreedomOutbound(reactor, settings=FreedomSettings(domain_strategy="UseIPv6"))
        with self.assertRaises(DNSLookupError):
            yield self.fetch(outbound, Destination.tcp("localhost", self.port))

    @defer.inlineCallbacks
    def test_unencodable_name_is_a_lookup_error(self) -> Any:
        """A name the IDNA codec refuses (a 64-character label) fails as a DNS lookup, so
        the SOCKS reply says host unreachable rather than general failure."""
        outbound = FreedomOutbound(reactor, settings=FreedomSettings(domain_strategy="UseIP"))
        with self.assertRaises(DNSLookupError):
            yield self.fetch(outbound, Destination.tcp("a" * 64 + ".test", self.port))

    def test_resolving_endpoint_keeps_the_connect_timeout(self) -> None:
        outbound = FreedomOutbound(reactor, settings=FreedomSettings(domain_strategy="UseIP"),
                                   connect_timeout=7)
        made: list[tuple[Any, ...]] = []
        self.patch(freedom_outbound, "tcp_client_endpoint", lambda *a: made.append(a))
        outbound.endpointFor(Destination.tcp("localhost", 1)).make("127.0.0.1")
        self.assertEqual(made, [(reactor, "127.0.0.1", 1, 7)])

    @defer.inlineCallbacks
    def test_redirect(self) -> Any:
        """redirect sends every connection to its address; port 0 keeps the original port."""
        outbound = FreedomOutbound(
            reactor, settings=FreedomSettings(redirect=("127.0.0.1", self.port)))
        self.assertEqual((yield self.fetch(outbound, Destination.tcp("example.invalid", 9))),
                         b"hello from %d" % self.port)
        keep_port = FreedomOutbound(reactor, settings=FreedomSettings(redirect=("127.0.0.1", 0)))
        self.assertEqual(
            (yield self.fetch(keep_port, Destination.tcp("example.invalid", self.port))),
            b"hello from %d" % self.port)

    @defer.inlineCallbacks
    def test_udp_to_ip_and_domain(self) -> Any:
        echo = reactor.listenUDP(0, UDPEcho(bytes.upper), interface="127.0.0.1", maxPacketSize=65535)
        self.addCleanup(echo.stopListening)
        port = echo.getHost().port
        replies: defer.DeferredQueue[tuple[bytes, Destination]] = defer.DeferredQueue()
        session = FreedomOutbound(reactor).packetSession(
            lambda data, source: replies.put((data, source)), lambda: None)
        self.addCleanup(session.close)
        session.send(b"ping", Destination.udp("127.0.0.1", port))
        self.assertEqual((yield replies.get()), (b"PING", Destination.udp("127.0.0.1", port)))
        session.send(b"big" * 10000, Destination.udp("localhost", port))
        data, source = yield replies.get()
        self.assertEqual((data, source), (b"BIG" * 10000, Destination.udp("127.0.0.1", port)))


class FreedomUDPLookupTests(SynchronousTestCase):
    """Datagrams to a name being resolved wait for the one lookup (no lookup per datagram)."""

    def setUp(self) -> None:
        from vtwist.proxy.freedom import outbound as freedom

        self.lookups: list[defer.Deferred[str]] = []

        async def resolve(reactor: Any, host: str, strategy: str) -> str:
            d: defer.Deferred[str] = defer.Deferred()
            self.lookups.append(d)
            return await d

        self.patch(freedom, "resolve", resolve)
        self.written: list[tuple[bytes, Any]] = []
        written = self.written

        class Port:
            def write(self, data: bytes, addr: Any) -> None:
                written.append((data, addr))

            def stopListening(self) -> None:
                pass

        class Reactor:
            def listenUDP(self, *args: Any, **kwargs: Any) -> Port:
                return Port()

        self.session = FreedomOutbound(Reactor()).packetSession(lambda *a: None, lambda: None)

    def test_one_lookup_per_name(self) -> None:
        for i in range(3):
            self.session.send(b"%d" % i, Destination.udp("dns.test", 53 + i))
        self.assertEqual(len(self.lookups), 1)
        self.assertEqual(self.written, [])
        self.lookups[0].callback("10.0.0.1")
        self.assertEqual(self.written, [(b"0", ("10.0.0.1", 53)), (b"1", ("10.0.0.1", 54)),
                                        (b"2", ("10.0.0.1", 55))])
        self.session.send(b"later", Destination.udp("dns.test", 53))
        self.assertEqual(len(self.lookups), 1)
        self.assertEqual(self.written[-1], (b"later", ("10.0.0.1", 53)))

    def test_waiting_is_bounded_and_a_failed_lookup_drops_it(self) -> None:

        for _ in range(MAX_QUEUED + 10):
            self.session.send(b"x", Destination.udp("dns.test", 53))
        self.assertEqual(len(self.session._resolving["dns.test"]),
                         MAX_QUEUED)
        self.lookups[0].errback(DNSLookupError("dns.test"))
        self.assertEqual((self.written, self.session._resolving), ([], {}))
        self.session.send(b"again", Destination.udp("dns.test", 53))
        self.assertEqual(len(self.lookups), 2)  # a new datagram tries again


class BlackholeTests(SynchronousTestCase):
    def connect(self, response: str, clock: Clock) -> CollectUntilClosed:
        collector = CollectUntilClosed()
        outbound = BlackholeOutbound(clock, "block", BlackholeSettings(response))
        d = outbound.endpointFor(Destination.tcp("example.com", 80)).connect(
            Factory.forProtocol(lambda: collector))
        self.assertIs(self.successResultOf(d), collector)
        collector.transport.write(b"GET / HTTP/1.1\r\n\r\n")  # swallowed
        return collector

    def test_none_closes_at_once(self) -> None:
        clock = Clock()
        collector = self.connect("none", clock)
        clock.advance(0)
        self.assertEqual(self.successResultOf(collector.done), b"")

    def test_http_answers_403_then_closes(self) -> None:
        clock = Clock()
        collector = self.connect("http", clock)
        self.assertEqual(collector.data, HTTP_RESPONSE)
        self.assertTrue(HTTP_RESPONSE.startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        clock.advance(0.9)
        self.assertNoResult(collector.done)
        clock.advance(0.2)
        self.assertEqual(self.successResultOf(collector.done), HTTP_RESPONSE)

    def test_udp_dropped(self) -> None:
        session = BlackholeOutbound(Clock()).packetSession(
            lambda *a: self.fail("no reply expected"), lambda: None)
        session.send(b"x", Destination.udp("1.2.3.4", 53))
        session.close()
