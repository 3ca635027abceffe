"""Sniffing: the HTTP, TLS and BitTorrent sniffers on whole, split, truncated and garbage
input, and the tunnel routing by the sniffed domain and protocol."""

from __future__ import annotations

import ssl
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.config.node import Node
from vtwist.interfaces import IInboundReply
from vtwist.policy import LevelPolicy
from vtwist.routing import Router
from vtwist.routing.parse import parse_routing
from vtwist.sansio import NEED_DATA
from vtwist.testing.doubles import HalfCloseTransport
from vtwist.testing.tunnels import FakeOutbound
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService
from vtwist.tunnel.sniff import Sniffed, Sniffer, should_override
from vtwist.tunnel.sniff.bittorrent import sniff_bittorrent
from vtwist.tunnel.sniff.http import sniff_http
from vtwist.tunnel.sniff.tls import sniff_tls
from vtwist.tunnel.stream import SNIFF_TIMEOUT

POLICY = LevelPolicy()


def client_hello(server_name: str | None = "example.test") -> bytes:
    """A real ClientHello from Python's ssl module (OpenSSL), as a client sends it."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name) if server_name else \
        ssl._create_unverified_context().wrap_bio(incoming, outgoing)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


HTTP_GET = (b"GET /index.html HTTP/1.1\r\nUser-Agent: curl\r\nHost: Example.TEST:8080\r\n"
            b"Accept: */*\r\n\r\n")


class HTTPSnifferTests(SynchronousTestCase):
    def test_host_header(self) -> None:
        self.assertEqual(sniff_http(HTTP_GET), ("http1", "example.test"))
        self.assertEqual(sniff_http(b"POST / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n"),
                         ("http1", "::1"))

    def test_every_prefix_needs_data_or_answers_the_same(self) -> None:
        for i in range(len(HTTP_GET)):
            result = sniff_http(HTTP_GET[:i])
            self.assertIn(result, (NEED_DATA, ("http1", "example.test")), i)

    def test_not_http(self) -> None:
        self.assertIsNone(sniff_http(b"\x16\x03\x01\x02\x00"))
        self.assertIsNone(sniff_http(b"GETX / HTTP/1.1\r\n"))
        self.assertIsNone(sniff_http(b"GET / HTTP/1.1\r\nAccept: x\r\n\r\n"))  # no Host
        self.assertIsNone(sniff_http(b"GET / HTTP/1.1\r\nHost: bad host!\r\n\r\n"))


class TLSSnifferTests(SynchronousTestCase):
    def test_real_client_hello(self) -> None:
        hello = client_hello("example.test")
        self.assertEqual(sniff_tls(hello), ("tls", "example.test"))

    def test_fragmented_over_reads(self) -> None:
        """Every prefix is NEED_DATA until the ClientHello is whole."""
        hello = client_hello("sub.example.test")
        record_end = 5 + int.from_bytes(hello[3:5], "big")
        for i in range(record_end):
            self.assertIs(sniff_tls(hello[:i]), NEED_DATA, i)
        self.assertEqual(sniff_tls(hello[:record_end]), ("tls", "sub.example.test"))

    def test_split_over_records(self) -> None:
        """A ClientHello carried in two TLS records is reassembled."""
        hello = client_hello("two.example.test")
        body = hello[5:5 + int.from_bytes(hello[3:5], "big")]
        cut = 50
        records = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                           for part in (body[:cut], body[cut:]))
        self.assertEqual(sniff_tls(records), ("tls", "two.example.test"))
        self.assertIs(sniff_tls(records[:5 + cut + 7]), NEED_DATA)

    def test_no_sni_and_not_tls(self) -> None:
        self.assertIsNone(sniff_tls(client_hello(None)))
        self.assertIsNone(sniff_tls(HTTP_GET))
        self.assertIsNone(sniff_tls(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"))  # not a hello

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.integers(0, 600))
    def test_garbage_never_raises(self, junk: bytes, cut: int) -> None:
        for data in (junk, b"\x16\x03\x01" + junk, client_hello()[:cut] + junk):
            self.assertIn(type(sniff_tls(data)).__name__, ("tuple", "NoneType", "_NeedData"))
            self.assertIn(type(sniff_http(data)).__name__, ("tuple", "NoneType", "_NeedData"))


class SnifferTests(SynchronousTestCase):
    def test_only_the_named_protocols(self) -> None:
        self.assertIsNone(Sniffer(("tls",)).sniff(HTTP_GET))
        self.assertEqual(Sniffer(("http", "tls")).sniff(client_hello()),
                         Sniffed("tls", "example.test"))
        self.assertTrue(should_override(Sniffed("http1", "a.test"), ("http",)))
        self.assertFalse(should_override(Sniffed("tls", "a.test"), ("http",)))

    def test_gives_up_on_endless_input(self) -> None:
        sniffer = Sniffer(("http",))
        self.assertIs(sniffer.sniff(b"GET / HTTP/1.1\r\n"), NEED_DATA)
        self.assertIsNone(sniffer.sniff(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000))


@implementer(IInboundReply)
class Reply:
    def __init__(self, transport: HalfCloseTransport) -> None:
        self.transport = transport
        self.events: list[Any] = []

    def succeeded(self, bound: Any) -> None:
        self.events.append("ok")

    def failed(self, kind: Any, reason: Any) -> None:
        self.events.append("failed")
        self.transport.loseConnection()


class TunnelSniffingTests(SynchronousTestCase):
    """A client that connects by IP with a ClientHello for a domain is routed by that domain."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.direct, self.proxy = FakeOutbound("direct"), FakeOutbound("proxy")
        router: Router = parse_routing(Node({"rules": [
            {"type": "field", "domain": ["domain:example.test"], "outboundTag": "proxy"}]}),
            ["direct", "proxy"])
        self.tunnels = TunnelService(Dispatcher([self.direct, self.proxy], router=router),
                                     self.clock)

    def open(self, sniff: tuple[str, ...]) -> tuple[Any, HalfCloseTransport, Reply]:
        transport = HalfCloseTransport()
        reply = Reply(transport)
        tunnel = self.tunnels.openStream(transport, Destination.tcp("93.184.216.34", 443),
                                         reply, policy=POLICY, sniff=sniff)
        return tunnel, transport, reply

    def test_tls_domain_routes_and_connects(self) -> None:
        tunnel, transport, reply = self.open(("http", "tls"))
        self.assertEqual(reply.events, ["ok"])  # replied first, so the client speaks
        self.assertEqual(self.direct.connects + self.proxy.connects, [])
        hello = client_hello("www.example.test")
        tunnel.received(hello[:30])
        self.assertEqual(self.proxy.connects, [])
        tunnel.received(hello[30:])
        [pending] = self.proxy.connects
        self.assertEqual(pending.destination, Destination.tcp("www.example.test", 443))
        target = pending.succeed().transport
        self.assertEqual(target.value(), hello)  # nothing lost, nothing twice
        self.assertEqual(reply.events, ["ok"])

    def test_not_sniffable_goes_to_the_address_after_the_timeout(self) -> None:
        tunnel, transport, reply = self.open(("tls",))
        self.clock.advance(SNIFF_TIMEOUT)
        [pending] = self.direct.connects
        self.assertEqual(pending.destination, Destination.tcp("93.184.216.34", 443))
        tunnel.received(b"late")
        self.assertEqual(pending.succeed().transport.value(), b"late")

    def test_override_only_for_named_protocols(self) -> None:
        tunnel, transport, reply = self.open(("http",))
        tunnel.received(client_hello("www.example.test"))
        self.clock.advance(SNIFF_TIMEOUT)
        [pending] = self.direct.connects
        self.assertEqual(pending.destination.host, "93.184.216.34")

    def test_failure_after_the_early_reply_only_closes(self) -> None:
        tunnel, transport, reply = self.open(("tls",))
        tunnel.received(client_hello("www.example.test"))
        self.proxy.connects[0].fail(ConnectionRefusedError())
        self.assertEqual(reply.events, ["ok"])
        self.assertTrue(transport.disconnecting)

    def test_without_sniffing_nothing_changes(self) -> None:
        tunnel, transport, reply = self.open(())
        self.assertEqual(reply.events, [])
        [pending] = self.direct.connects
        tunnel.received(b"early")  # held while connecting, the client paused meanwhile
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(pending.destination.host, "93.184.216.34")
        self.assertIsNotNone(tunnel)


class BitTorrentSnifferTests(SynchronousTestCase):
    HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + b"h" * 20 + b"p" * 20

    def test_handshake(self) -> None:
        self.assertEqual(sniff_bittorrent(self.HANDSHAKE), ("bittorrent", ""))
        self.assertIs(sniff_bittorrent(self.HANDSHAKE[:19]), NEED_DATA)
        self.assertIsNone(sniff_bittorrent(b"\x13BitTorrent protocoX"))
        self.assertEqual(Sniffer().sniff(self.HANDSHAKE), Sniffed("bittorrent", ""))
        # No domain: never an override, whatever destOverride says.
        self.assertFalse(should_override(Sniffed("bittorrent", ""), ("bittorrent",)))


class ProtocolRoutingTests(SynchronousTestCase):
    """The ``protocol`` rule field sees what sniffing recognised, as 4.34: every sniffer runs
    whatever ``destOverride`` names; only the override is limited to those named."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.direct, self.bt, self.tls = (FakeOutbound("direct"), FakeOutbound("bt"),
                                          FakeOutbound("tls-out"))
        router: Router = parse_routing(Node({"rules": [
            {"type": "field", "protocol": ["bittorrent"], "outboundTag": "bt"},
            {"type": "field", "protocol": "tls", "outboundTag": "tls-out"}]}),
            ["direct", "bt", "tls-out"])
        self.tunnels = TunnelService(
            Dispatcher([self.direct, self.bt, self.tls], router=router), self.clock)

    def open(self, sniff: tuple[str, ...]) -> Any:
        transport = HalfCloseTransport()
        return self.tunnels.openStream(transport, Destination.tcp("198.51.100.7", 6881),
                                       Reply(transport), policy=POLICY, sniff=sniff)

    def test_bittorrent_routed_by_protocol(self) -> None:
        tunnel = self.open(("http", "tls"))
        tunnel.received(BitTorrentSnifferTests.HANDSHAKE)
        [pending] = self.bt.connects
        self.assertEqual(pending.destination, Destination.tcp("198.51.100.7", 6881))
        self.assertEqual(pending.succeed().transport.value(), BitTorrentSnifferTests.HANDSHAKE)

    def test_tls_routed_by_protocol_without_override(self) -> None:
        tunnel = self.open(("http",))  # TLS is sniffed, not overridden
        tunnel.received(client_hello("www.example.test"))
        [pending] = self.tls.connects
        self.assertEqual(pending.destination.host, "198.51.100.7")

    def test_nothing_sniffed_matches_no_protocol_rule(self) -> None:
        tunnel = self.open(("http", "tls"))
        tunnel.received(b"\x00\x01 not a known protocol at all")
        [pending] = self.direct.connects
        self.assertEqual(pending.destination.host, "198.51.100.7")
