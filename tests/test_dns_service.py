"""The dns section inside a running service: routing's IPIfNonMatch / IPOnDemand, freedom's
UseIPv4 and a VMess outbound's server name all resolve through the internal DNS (names only
the local test DNS server or ``hosts`` know), and routed queries (DoH through the router)."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tests.dns_helpers import Zone, start_dns, start_doh
from tests.netutil import free_port
from tests.services import start_service
from tests.test_socks_e2e import recv_exactly, socks_connect
from vtwist.address import Destination
from vtwist.config.node import Node
from vtwist.dns.resolver import DnsResolver
from vtwist.dns.settings import parse_dns
from vtwist.dns.system import V4
from vtwist.testing.doubles import Echo
from vtwist.tunnel.dnsroute import RoutedNetwork


def echo_port(test: TestCase) -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return port.getHost().port  # type: ignore[no-any-return]


def through_socks(socks: int, host: str, port: int) -> defer.Deferred[bytes]:
    """A SOCKS CONNECT to ``host:port`` (the proxy resolves it), one echoed line."""
    def go() -> bytes:
        with socks_connect(socks, host, port) as s:
            s.sendall(b"hello dns\n")
            return recv_exactly(s, 10)
    return threads.deferToThread(go)


class ServiceTests(TestCase):
    """A config's dns section drives routing, freedom and outbound server names."""

    timeout = 60

    def setUp(self) -> None:
        self.zone = Zone({"web.test": ["127.0.0.1"], "blocked.test": ["10.66.0.1"],
                          "vmess-server.test": ["127.0.0.1"]})
        self.dns_port = start_dns(reactor, self.zone, self)
        self.dns = {"servers": [{"address": "127.0.0.1", "port": self.dns_port}]}

    @defer.inlineCallbacks
    def routed(self, strategy: str, host: str) -> Any:
        service = yield start_service({
            "dns": self.dns,
            "routing": {"domainStrategy": strategy, "rules": [
                {"type": "field", "ip": ["10.66.0.0/16"], "outboundTag": "block"}]},
            "outbounds": [{"tag": "direct", "protocol": "freedom"},
                          {"tag": "block", "protocol": "blackhole"}]}, self)
        outbound = yield defer.maybeDeferred(service.dispatcher.choose,
                                             Destination.tcp(host, 80))
        return outbound.tag

    @defer.inlineCallbacks
    def test_ip_if_non_match(self) -> Any:
        self.assertEqual((yield self.routed("IPIfNonMatch", "blocked.test")), "block")
        self.assertEqual((yield self.routed("IPIfNonMatch", "web.test")), "direct")
        self.assertIn(("blocked.test", 1), self.zone.queries)

    @defer.inlineCallbacks
    def test_ip_on_demand(self) -> Any:
        self.assertEqual((yield self.routed("IPOnDemand", "blocked.test")), "block")
        self.assertEqual((yield self.routed("IPOnDemand", "unknown.test")), "direct")

    @defer.inlineCallbacks
    def test_freedom_use_ipv4(self) -> Any:
        echo, socks = echo_port(self), free_port()
        yield start_service({
            "dns": self.dns,
            "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": socks}],
            "outbounds": [{"protocol": "freedom", "settings": {"domainStrategy": "UseIPv4"}}]},
            self)
        self.assertEqual((yield through_socks(socks, "web.test", echo)), b"hello dns\n")
        self.assertIn(("web.test", 1), self.zone.queries)

    @defer.inlineCallbacks
    def test_vmess_server_name(self) -> Any:
        """The client's VMess server is vmess-server.test (hosts maps it in one run, the
        test DNS server answers it in the other); the system resolver knows neither."""
        user = {"id": str(uuid.uuid4()), "alterId": 0}
        echo, socks, server = echo_port(self), free_port(), free_port()
        yield start_service({
            "inbounds": [{"protocol": "vmess", "listen": "127.0.0.1", "port": server,
                          "settings": {"clients": [user]}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        for dns in ({**self.dns, "tag": "dns-in"}, {"hosts": {"vmess-server.test": "127.0.0.1"}}):
            socks = free_port()
            client = yield start_service({
                "dns": dns,
                "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": socks}],
                "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                    "address": "vmess-server.test", "port": server, "users": [user]}]}},
                    {"tag": "direct", "protocol": "freedom"}],
                # the DNS queries go direct: through the vmess outbound they would need the
                # very name they ask for
                "routing": {"rules": [{"type": "field", "inboundTag": ["dns-in"],
                                       "outboundTag": "direct"}]}},
                self)
            self.assertEqual((yield through_socks(socks, "127.0.0.1", echo)), b"hello dns\n")
            yield client.stopService()
        self.assertIn(("vmess-server.test", 1), self.zone.queries)

    @defer.inlineCallbacks
    def test_lookup_loop_is_a_clean_error(self) -> Any:
        """DNS queries routed through a VMess outbound whose server name only that DNS
        knows: a lookup error, no recursion, nothing logged."""
        socks = free_port()
        service = yield start_service({
            "dns": {**self.dns, "tag": "dns-in"},
            "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": socks}],
            "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                "address": "vmess-server.test", "port": free_port(),
                "users": [{"id": str(uuid.uuid4())}]}]}}]}, self)
        with self.assertRaises(DNSLookupError):
            yield service.resolver.resolve("vmess-server.test", V4)
        self.assertEqual(self.flushLoggedErrors(), [])


class _Dispatcher:
    """Records what the routed queries ask for, and hands them to ``outbound``."""

    def __init__(self, outbound: Any) -> None:
        self.outbound = outbound
        self.asked: list[tuple[Destination, str | None]] = []

    def outboundFor(self, destination: Destination, inbound_tag: str | None = None) -> Any:
        self.asked.append((destination, inbound_tag))
        return self.outbound


class RoutedTests(TestCase):
    """https:// (DoH) and plain servers are reached through the router with the dns tag."""

    timeout = 60

    @defer.inlineCallbacks
    def test_doh_and_udp_through_the_router(self) -> Any:
        from vtwist.proxy.freedom.outbound import FreedomOutbound

        zone = Zone({"d.test": ["10.4.4.4"]})
        port, ca, res = start_doh(reactor, zone, self)
        udp_zone = Zone({"u.test": ["10.5.5.5"]})
        udp_port = start_dns(reactor, udp_zone, self)
        dispatcher = _Dispatcher(FreedomOutbound(reactor))
        config = parse_dns(Node({
            "servers": [f"https://localhost:{port}/dns-query",
                        {"address": "127.0.0.1", "port": udp_port, "domains": ["u.test"]}],
            "tag": "dns-in"}, "dns"))
        assert config is not None
        resolver = DnsResolver(config, reactor, routed=RoutedNetwork(lambda: dispatcher,
                                                                     "dns-in"),
                               trust_root=ca)
        self.addCleanup(resolver.close)
        self.assertEqual((yield resolver.resolve("d.test", V4)), ["10.4.4.4"])
        self.assertEqual(res.requests, 1)
        self.assertEqual((yield resolver.resolve("u.test", V4)), ["10.5.5.5"])
        self.assertEqual(dispatcher.asked, [(Destination.tcp("localhost", port), "dns-in"),
                                            (Destination.udp("127.0.0.1", udp_port), "dns-in")])
