"""The internal DNS (vtwist.dns) against local servers: twisted.names over UDP and TCP, a raw
UDP answerer for bad answers, and DoH over TLS."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError, DNSLookupError
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.dns_helpers import QuietDNSFactory, Zone, reply_to, start_dns, start_doh, start_raw_udp
from tests.netutil import wait_until
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.dns.cache import StaticHosts, TTLCache
from vtwist.dns.resolver import DnsResolver
from vtwist.dns.settings import parse_dns
from vtwist.dns.system import V4, V6, NoAddress, NoSuchDomain
from vtwist.routing.geodata.wire import DOMAIN, FULL
from vtwist.testing.geodata import write_geoip, write_geosite


def resolver_for(section: dict[str, Any], timeout: float = 4.0, **kw: Any) -> DnsResolver:
    config = parse_dns(Node(section, "dns"))
    assert config is not None
    config.timeout = timeout
    return DnsResolver(config, reactor, **kw)


class SettingsTests(SynchronousTestCase):
    """The dns section parses as 4.34 reads it; bad input names its JSON path."""

    def test_server_forms(self) -> None:
        config = parse_dns(Node({"servers": [
            "8.8.8.8", "1.1.1.1:5353", "localhost", "https://dns.google/dns-query",
            "https+local://1.1.1.1/dns-query", "tcp://9.9.9.9", "[2001:db8::1]:53",
            {"address": "114.114.114.114", "port": 54, "domains": ["domain:cn"],
             "expectIPs": ["10.0.0.0/8"], "clientIp": "1.2.3.4"}]}, "dns"))
        assert config is not None
        kinds = [(s.kind, s.host, s.port) for s in config.servers]
        self.assertEqual(kinds, [
            ("udp", "8.8.8.8", 53), ("udp", "1.1.1.1", 5353), ("localhost", "", 53),
            ("doh", "dns.google", 443), ("doh-local", "1.1.1.1", 443), ("tcp", "9.9.9.9", 53),
            ("udp", "2001:db8::1", 53), ("udp", "114.114.114.114", 54)])
        last = config.servers[-1]
        self.assertTrue(last.domains.match("www.baidu.cn"))
        self.assertEqual(last.client_ip, "1.2.3.4")
        self.assertEqual(config.servers[3].url, "https://dns.google/dns-query")
        # localhost answers dotless and local names first, as 4.34
        self.assertTrue(config.servers[2].domains.match("printer"))

    def test_errors_name_path(self) -> None:
        for section, path in [
            ({"servers": ["quic+local://dns.adguard.com"]}, "dns.servers[0]"),
            ({"servers": [{"port": 53}]}, "dns.servers[0].address"),
            ({"servers": [{"address": "1.1.1.1", "expectIPs": ["nope"]}]},
             "dns.servers[0].expectIPs[0]"),
            ({"clientIp": "x"}, "dns.clientIp"),
            ({"hosts": {"a.com": "not a domain!"}}, "dns.hosts.a.com"),
            ({"hosts": {"a.com": ["1.1.1.1", "b.com"]}}, "dns.hosts.a.com"),
            ({"servers": ["gopher://x"]}, "dns.servers[0]"),
            ({"servers": ["https://[::1/dns-query"]}, "dns.servers[0]"),  # unclosed "["
        ]:
            with self.assertRaises(ConfigError) as e:
                parse_dns(Node(section, "dns"))
            self.assertEqual(e.exception.path, path, section)

    def test_hosts(self) -> None:
        config = parse_dns(Node({"hosts": {
            "a.com": "1.1.1.1", "domain:b.com": ["2.2.2.2", "::2"], "full:c.com": "a.com",
            "keyword:kw": "3.3.3.3", "alias.com": "b.com"}}, "dns"))
        assert config is not None
        hosts = StaticHosts(config.hosts)
        self.assertEqual(hosts.lookup("a.com"), ("1.1.1.1",))
        self.assertIsNone(hosts.lookup("x.a.com"))  # a bare key is full:
        self.assertEqual(hosts.lookup("x.b.com"), ("2.2.2.2", "::2"))
        self.assertEqual(hosts.lookup("x.b.com", V6), ("::2",))
        self.assertEqual(hosts.lookup("c.com"), ("1.1.1.1",))  # alias followed
        self.assertEqual(hosts.lookup("alias.com", V4), ("2.2.2.2",))
        self.assertEqual(hosts.lookup("xkwx.org"), ("3.3.3.3",))

    def test_geosite_and_geoip(self) -> None:
        """geosite: in hosts keys and servers[].domains, geoip: in expectIPs (the routing
        builders read the .dat files from V2RAY_LOCATION_ASSET)."""
        assets = self.mktemp()
        os.mkdir(assets)
        write_geosite(os.path.join(assets, "geosite.dat"), {
            "test": [(DOMAIN, "geo.test", ()), (FULL, "exact.example", ())]})
        write_geoip(os.path.join(assets, "geoip.dat"), {
            "xx": [(bytes([10, 0, 0, 0]), 8)]})
        self.patch(os, "environ", {**os.environ, "V2RAY_LOCATION_ASSET": assets})
        config = parse_dns(Node({
            "hosts": {"geosite:test": "10.1.2.3"},
            "servers": [{"address": "1.1.1.1", "domains": ["geosite:test"],
                         "expectIPs": ["geoip:xx"]}]}, "dns"))
        assert config is not None
        hosts = StaticHosts(config.hosts)
        self.assertEqual(hosts.lookup("a.geo.test"), ("10.1.2.3",))
        self.assertEqual(hosts.lookup("exact.example"), ("10.1.2.3",))
        self.assertIsNone(hosts.lookup("a.exact.example"))
        server = config.servers[0]
        self.assertTrue(server.domains.match("b.geo.test"))
        self.assertFalse(server.domains.match("other.test"))
        self.assertIn(ipaddress.ip_address("10.9.9.9"), server.expect_ips)
        self.assertNotIn(ipaddress.ip_address("11.0.0.1"), server.expect_ips)
        with self.assertRaises(ConfigError) as e:
            parse_dns(Node({"servers": [{"address": "1.1.1.1", "domains": ["geosite:none"]}]},
                           "dns"))
        self.assertEqual(e.exception.path, "dns.servers[0].domains[0]")

    def test_cache(self) -> None:
        cache = TTLCache(size=2)
        cache.put("a", 0, ("1.1.1.1",), 10, now=100)
        self.assertEqual(cache.get("a", 0, 109.9), ("1.1.1.1",))
        self.assertIsNone(cache.get("a", 0, 110))
        for i in range(3):
            cache.put(str(i), 0, ("1.1.1.1",), 10, now=0)
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get("0", 0, 1))


class ResolverTests(TestCase):
    """Lookups against real local servers."""

    timeout = 60

    def setUp(self) -> None:
        self.zone = Zone({"a.test": ["10.0.0.1", "fd00::1"], "b.test": ["192.0.2.7"],
                          "cn.test": ["10.9.9.9"]}, ttl=300)
        self.port = start_dns(reactor, self.zone, self)

    @defer.inlineCallbacks
    def test_udp_both_families_and_cache(self) -> Any:
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}]})
        ips = yield r.resolve("a.test")
        self.assertEqual(ips, ["10.0.0.1", "fd00::1"])
        self.assertEqual(sorted(self.zone.queries), [("a.test", dns.A), ("a.test", dns.AAAA)])
        again = yield r.resolve("A.TEST.")
        self.assertEqual(again, ips)
        self.assertEqual(len(self.zone.queries), 2)  # from the cache
        v6 = yield r.resolve("a.test", V6)
        self.assertEqual(v6, ["fd00::1"])

    @defer.inlineCallbacks
    def test_tcp(self) -> Any:
        r = resolver_for({"servers": [f"tcp://127.0.0.1:{self.port}"]})
        ips = yield r.resolve("b.test", V4)
        self.assertEqual(ips, ["192.0.2.7"])

    @defer.inlineCallbacks
    def test_ttl_expiry(self) -> Any:
        self.zone.ttl = 1
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}]})
        clock = Clock()
        r.reactor = _ClockedReactor(clock)
        yield r.resolve("b.test", V4)
        clock.advance(0.5)
        yield r.resolve("b.test", V4)
        self.assertEqual(len(self.zone.queries), 1)
        clock.advance(0.6)
        yield r.resolve("b.test", V4)
        self.assertEqual(len(self.zone.queries), 2)

    @defer.inlineCallbacks
    def test_nxdomain(self) -> Any:
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}]})
        for _ in range(2):
            with self.assertRaises(NoSuchDomain) as e:
                yield r.resolve("nothing.test", V4)
            self.assertIn("NXDOMAIN", str(e.exception))
        self.assertEqual(self.zone.queries, [("nothing.test", dns.A)])  # cached
        for _ in range(2):
            with self.assertRaises(NoAddress):
                yield r.resolve("b.test", V6)
        self.assertEqual(self.zone.queries[1:], [("b.test", dns.AAAA)])

    @defer.inlineCallbacks
    def test_concurrent_queries_collapse(self) -> Any:
        self.zone.gate = defer.Deferred()
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}]})
        waiting = [r.resolve("b.test", V4) for _ in range(20)]
        yield _until(lambda: len(self.zone.queries) >= 1)
        self.zone.gate.callback(None)
        results = yield defer.gatherResults(waiting)
        self.assertEqual(results, [["192.0.2.7"]] * 20)
        self.assertEqual(self.zone.queries, [("b.test", dns.A)])

    @defer.inlineCallbacks
    def test_domain_specific_server_first(self) -> Any:
        other = Zone({"cn.test": ["10.1.1.1"], "b.test": ["10.2.2.2"]})
        other_port = start_dns(reactor, other, self)
        r = resolver_for({"servers": [
            {"address": "127.0.0.1", "port": self.port},
            {"address": "127.0.0.1", "port": other_port, "domains": ["domain:cn.test"]}]})
        ips = yield r.resolve("cn.test", V4)
        self.assertEqual(ips, ["10.1.1.1"])  # the cn server, though listed second
        ips = yield r.resolve("b.test", V4)
        self.assertEqual(ips, ["192.0.2.7"])  # the first server for the rest
        self.assertEqual(self.zone.queries, [("b.test", dns.A)])

    @defer.inlineCallbacks
    def test_expect_ips(self) -> Any:
        other = Zone({"b.test": ["10.2.2.2"]})
        other_port = start_dns(reactor, other, self)
        r = resolver_for({"servers": [
            {"address": "127.0.0.1", "port": other_port, "expectIPs": ["192.0.2.0/24"]},
            {"address": "127.0.0.1", "port": self.port}]})
        ips = yield r.resolve("b.test", V4)
        self.assertEqual(ips, ["192.0.2.7"])  # the first answer missed expectIPs
        self.assertEqual(len(other.queries), 1)

    @defer.inlineCallbacks
    def test_servfail_then_next(self) -> Any:
        bad = Zone({})
        bad.mode = "servfail"
        bad_port = start_dns(reactor, bad, self)
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": bad_port},
                                      {"address": "127.0.0.1", "port": self.port}]})
        ips = yield r.resolve("b.test", V4)
        self.assertEqual(ips, ["192.0.2.7"])
        self.assertEqual(len(bad.queries), 1)
        only_bad = resolver_for({"servers": [{"address": "127.0.0.1", "port": bad_port}]})
        with self.assertRaises(DNSLookupError) as e:
            yield only_bad.resolve("b.test", V4)
        self.assertIn("SERVFAIL", str(e.exception))

    @defer.inlineCallbacks
    def test_timeout_then_next(self) -> Any:
        silent = Zone({})
        silent.mode = "silent"
        silent_port = start_dns(reactor, silent, self)
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": silent_port},
                                      {"address": "127.0.0.1", "port": self.port}]},
                         timeout=1.5)
        ips = yield r.resolve("b.test", V4)
        self.assertEqual(ips, ["192.0.2.7"])
        self.assertGreaterEqual(len(silent.queries), 1)  # resent each second
        only = resolver_for({"servers": [{"address": "127.0.0.1", "port": silent_port}]},
                            timeout=0.5)
        with self.assertRaises(DNSLookupError) as e:
            yield only.resolve("b.test", V4)
        self.assertIn("timed out", str(e.exception))

    @defer.inlineCallbacks
    def test_hosts_before_servers(self) -> Any:
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}],
                          "hosts": {"domain:b.test": "203.0.113.5", "alias.test": "a.test",
                                    "full:v6only.test": "::5"}})
        self.assertEqual((yield r.resolve("x.b.test")), ["203.0.113.5"])
        self.assertEqual((yield r.resolve("alias.test", V4)), ["10.0.0.1"])
        with self.assertRaises(DNSLookupError):
            yield r.resolve("v6only.test", V4)
        self.assertEqual(self.zone.queries, [("a.test", dns.A)])

    @defer.inlineCallbacks
    def test_client_subnet(self) -> Any:
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": self.port}],
                          "clientIp": "203.0.113.77"})
        yield r.resolve("b.test", V4)
        # option 8, length 7, family 1, /24, scope 0, 203.0.113
        self.assertEqual(self.zone.client_subnets, [bytes.fromhex("00080007000118 00cb0071"
                                                                  .replace(" ", ""))])

    @defer.inlineCallbacks
    def test_localhost_server(self) -> Any:
        r = resolver_for({"servers": ["localhost"]})
        ips = yield r.resolve("localhost", V4)
        self.assertIn("127.0.0.1", ips)


class _ClockedReactor:
    """The real reactor for sockets, a Clock for the cache's time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def _until(check: Any) -> defer.Deferred[None]:
    return defer.Deferred.fromCoroutine(wait_until(check, "the server saw the query"))


class BadAnswerTests(TestCase):
    """Malformed, oversized and wrong-ID answers: a clean DNSLookupError, nothing logged."""

    timeout = 30

    @defer.inlineCallbacks
    def check(self, answer: Any, why: str, timeout: float = 1.5) -> Any:
        raw = start_raw_udp(reactor, answer, self)
        r = resolver_for({"servers": [
            {"address": "127.0.0.1", "port": raw.transport.getHost().port}]}, timeout=timeout)
        with self.assertRaises(DNSLookupError) as e:
            yield r.resolve("x.test", V4)
        self.assertIn(why, str(e.exception))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_malformed(self) -> Any:
        return self.check(lambda q: [q[:2] + b"\x81\x80\x00\x01\x00\x05garbage"], "malformed")

    def test_short(self) -> Any:
        return self.check(lambda q: [q[:2] + b"\x81"], "short")

    def test_wrong_id_ignored_then_timeout(self) -> Any:
        def answer(q: bytes) -> list[bytes]:
            real = int.from_bytes(q[:2], "big")
            return [reply_to(q, ["1.2.3.4"], query_id=(real + 1) % 65536)]
        return self.check(answer, "timed out")

    @defer.inlineCallbacks
    def test_wrong_id_then_right(self) -> Any:
        def answer(q: bytes) -> list[bytes]:
            real = int.from_bytes(q[:2], "big")
            return [reply_to(q, ["6.6.6.6"], query_id=(real + 1) % 65536),
                    reply_to(q, ["1.2.3.4"])]
        raw = start_raw_udp(reactor, answer, self)
        r = resolver_for({"servers": [
            {"address": "127.0.0.1", "port": raw.transport.getHost().port}]})
        self.assertEqual((yield r.resolve("x.test", V4)), ["1.2.3.4"])

    def test_oversized_udp_answer(self) -> Any:
        """3900 records (62 KB): more compression pointers than the codec follows."""
        many = [f"10.0.{i // 256}.{i % 256}" for i in range(3900)]
        return self.check(lambda q: [reply_to(q, many)], "malformed")

    @defer.inlineCallbacks
    def test_large_udp_answer(self) -> Any:
        many = [f"10.0.{i // 256}.{i % 256}" for i in range(900)]
        raw = start_raw_udp(reactor, lambda q: [reply_to(q, many)], self)
        r = resolver_for({"servers": [
            {"address": "127.0.0.1", "port": raw.transport.getHost().port}]})
        self.assertEqual((yield r.resolve("x.test", V4)), many)

    @defer.inlineCallbacks
    def test_truncated_udp_retried_over_tcp(self) -> Any:
        def truncated(q: bytes) -> list[bytes]:
            m = dns.Message()
            m.fromStr(q)
            r = dns.Message(id=m.id, answer=1, trunc=1)
            r.queries = m.queries
            return [bytes(r.toStr())]
        zone = Zone({"x.test": ["10.3.3.3"]})
        factory = QuietDNSFactory(clients=[zone])
        factory.zone = zone
        for _ in range(20):  # a UDP port whose TCP twin is free too
            raw = start_raw_udp(reactor, truncated, self)
            port = raw.transport.getHost().port
            try:
                tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
            except CannotListenError:
                continue
            self.addCleanup(tcp.stopListening)
            break
        r = resolver_for({"servers": [{"address": "127.0.0.1", "port": port}]})
        self.assertEqual((yield r.resolve("x.test", V4)), ["10.3.3.3"])
        self.assertEqual(len(raw.received), 1)
        self.assertEqual(zone.queries, [("x.test", dns.A)])

    def test_answer_for_other_question(self) -> Any:
        def answer(q: bytes) -> list[bytes]:
            m = dns.Message()
            m.fromStr(q)
            r = dns.Message(id=m.id, answer=1)
            r.queries = [dns.Query(b"other.test", dns.A)]
            return [bytes(r.toStr())]
        return self.check(answer, "another question")


class DoHTests(TestCase):
    """DNS over HTTPS (https+local://) against twisted.web over TLS."""

    timeout = 60

    @defer.inlineCallbacks
    def test_doh(self) -> Any:
        zone = Zone({"d.test": ["10.4.4.4", "fd00::4"]})
        port, ca, res = start_doh(reactor, zone, self)
        # localhost: the system's addresses in turn (::1 may come first; the server is
        # on 127.0.0.1 only)
        r = resolver_for({"servers": [f"https+local://localhost:{port}/dns-query"]},
                         trust_root=ca)
        self.addCleanup(r.close)
        ips = yield r.resolve("d.test")
        self.assertEqual(ips, ["10.4.4.4", "fd00::4"])
        self.assertEqual(res.requests, 2)
        with self.assertRaises(DNSLookupError):
            yield r.resolve("none.test", V4)

    @defer.inlineCallbacks
    def test_doh_oversized_and_malformed(self) -> Any:
        zone = Zone({"d.test": ["10.4.4.4"]})
        port, ca, res = start_doh(reactor, zone, self)
        r = resolver_for({"servers": [f"https+local://127.0.0.1:{port}/dns-query"]},
                         trust_root=ca)
        self.addCleanup(r.close)
        res.raw = b"\0" * 70000
        with self.assertRaises(DNSLookupError) as e:
            yield r.resolve("d.test", V4)
        self.assertIn("oversized", str(e.exception))
        res.raw = b"\1\2\3"
        with self.assertRaises(DNSLookupError) as e:
            yield r.resolve("d.test", V4)
        self.assertIn("wrong ID", str(e.exception))
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_doh_untrusted_certificate(self) -> Any:
        zone = Zone({"d.test": ["10.4.4.4"]})
        port, _, res = start_doh(reactor, zone, self)
        r = resolver_for({"servers": [f"https+local://127.0.0.1:{port}/dns-query"]})
        self.addCleanup(r.close)
        with self.assertRaises(DNSLookupError):
            yield r.resolve("d.test", V4)
        self.assertEqual(res.requests, 0)

    @defer.inlineCallbacks
    def test_doh_http_error(self) -> Any:
        zone = Zone({"d.test": ["10.4.4.4"]})
        port, ca, res = start_doh(reactor, zone, self, status=500)
        r = resolver_for({"servers": [f"https+local://127.0.0.1:{port}/dns-query"]},
                         trust_root=ca)
        self.addCleanup(r.close)
        with self.assertRaises(DNSLookupError) as e:
            yield r.resolve("d.test", V4)
        self.assertIn("HTTP 500", str(e.exception))
