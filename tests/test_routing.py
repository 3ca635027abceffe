"""Routing: rule matching (sans-IO), domainStrategy, config errors with paths, the dispatcher."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.config.node import Node
from vtwist.routing import (
    PRIVATE,
    DomainMatcher,
    IPSet,
    NeedIPs,
    Route,
    RouteContext,
    Router,
    split_source,
)
from vtwist.routing.parse import parse_port_ranges, parse_routing
from vtwist.tunnel.dispatcher import Dispatcher, NoOutbound
from vtwist.tunnel.packets import MAX_QUEUED, PacketTunnel
from vtwist.tunnel.service import TunnelService

from .helpers import ConfigErrorMixin
from .socks_helpers import FakeOutbound, LogCapture

TAGS = ("direct", "block", "proxy")


def router(rules: list[dict[str, Any]], strategy: str | None = None,
           warnings: list[str] | None = None) -> Router:
    data: dict[str, Any] = {"rules": rules}
    if strategy is not None:
        data["domainStrategy"] = strategy
    sink = warnings.append if warnings is not None else None
    return parse_routing(Node(data, "routing", sink), TAGS)


def field(tag: str = "block", **conditions: Any) -> dict[str, Any]:
    return {"type": "field", "outboundTag": tag, **conditions}


def ctx(host: str = "example.com", port: int = 443, network: str = "tcp", **kw: Any) -> RouteContext:
    return RouteContext(network, host, port, **kw)


def tag(r: Router, c: RouteContext) -> str | None:
    decision = r.route(c)
    assert isinstance(decision, Route), decision
    return decision.tag


labels = st.text("abcxyz0-", min_size=1, max_size=4)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)


class DomainMatcherTests(SynchronousTestCase):
    def matcher(self, *entries: str) -> DomainMatcher:
        return router([field(domain=list(entries))]).rules[0].domains  # type: ignore[return-value]

    def test_kinds(self) -> None:
        m = self.matcher("domain:example.com")
        for host, ok in (("example.com", True), ("a.b.example.com", True),
                         ("badexample.com", False), ("example.com.cn", False), ("com", False)):
            self.assertEqual(m.match(host), ok, host)
        m = self.matcher("full:example.com")
        self.assertTrue(m.match("example.com"))
        self.assertFalse(m.match("www.example.com"))
        m = self.matcher("keyword:ads")
        self.assertTrue(m.match("myads.example"))
        self.assertFalse(m.match("example.com"))
        m = self.matcher("google")  # plain = substring
        self.assertTrue(m.match("www.google.co.uk"))
        self.assertTrue(m.match("googleapis.com"))
        m = self.matcher(r"regexp:^ad[0-9]+\.")
        self.assertTrue(m.match("ad12.example"))
        self.assertFalse(m.match("bad12.example"))
        m = self.matcher("dotless:")
        self.assertTrue(m.match("intranet"))
        self.assertFalse(m.match("intranet.corp"))

    def test_case_insensitive(self) -> None:
        m = self.matcher("domain:Example.com", "full:A.TEST", "keyword:Ads")
        self.assertTrue(m.match("WWW.EXAMPLE.COM"))
        self.assertTrue(m.match("a.test"))
        self.assertTrue(m.match("bigADS.net"))

    def test_comma_string(self) -> None:
        m = router([field(domain="domain:a.test,full:b.test")]).rules[0].domains
        assert m is not None
        self.assertTrue(m.match("x.a.test") and m.match("b.test"))
        self.assertFalse(m.match("x.b.test"))

    @given(domains, domains)
    def test_domain_suffix_matches_definition(self, pattern: str, host: str) -> None:
        m = DomainMatcher()
        m.add("domain", pattern)
        self.assertEqual(m.match(host), host == pattern or host.endswith("." + pattern))

    @given(domains, st.lists(domains, max_size=5), st.lists(labels, max_size=3))
    def test_full_and_keyword_match_definition(self, host: str, fulls: list[str],
                                               words: list[str]) -> None:
        m = DomainMatcher()
        for f in fulls:
            m.add("full", f)
        for w in words:
            m.add("keyword", w)
        self.assertEqual(m.match(host), host in fulls or any(w in host for w in words))


ipv4_nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                      st.integers(0, 2**32 - 1), st.integers(0, 32))
ipv6_nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                      st.integers(0, 2**128 - 1), st.integers(0, 128))
ips = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))


class IPSetTests(SynchronousTestCase):
    @given(st.lists(st.one_of(ipv4_nets, ipv6_nets), max_size=8), st.lists(ips, max_size=8))
    def test_membership_matches_definition(self, nets: list[Any], probes: list[Any]) -> None:
        s = IPSet(nets)
        for net in nets:  # the edges of each network, and one past them
            probes += [net.network_address, net.broadcast_address]
        for ip in probes:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                continue
            self.assertEqual(ip in s, any(ip in n for n in nets), ip)

    def test_private(self) -> None:
        for inside in ("10.1.2.3", "192.168.1.1", "127.0.0.1", "172.31.255.255", "100.64.0.1",
                       "169.254.1.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fd00::1",
                       "::ffff:10.0.0.1"):
            self.assertIn(ipaddress.ip_address(inside), PRIVATE, inside)
        for outside in ("8.8.8.8", "172.32.0.1", "1.1.1.1", "2001:4860::8888"):
            self.assertNotIn(ipaddress.ip_address(outside), PRIVATE, outside)

    def test_rule_entries(self) -> None:
        r = router([field(ip=["10.0.0.0/8", "1.2.3.4", "2001:db8::/32", "geoip:PRIVATE",
                              "::ffff:5.6.7.0/120"])])
        s = r.rules[0].ips
        assert s is not None
        for inside in ("10.9.9.9", "1.2.3.4", "2001:db8::1", "192.168.0.1", "5.6.7.8"):
            self.assertIn(ipaddress.ip_address(inside), s, inside)
        self.assertNotIn(ipaddress.ip_address("1.2.3.5"), s)


class PortAndSourceTests(SynchronousTestCase):
    def test_port_forms(self) -> None:
        self.assertEqual(parse_port_ranges(Node("53")), [(53, 53)])
        self.assertEqual(parse_port_ranges(Node(53)), [(53, 53)])
        self.assertEqual(parse_port_ranges(Node("1000-2000")), [(1000, 2000)])
        self.assertEqual(parse_port_ranges(Node("80, 443,1000-1001")),
                         [(80, 80), (443, 443), (1000, 1001)])

    def test_port_errors(self) -> None:
        for bad in ("70000", "3-1", "", "a", True, [80], -1):
            self.assertRaises(ConfigError, parse_port_ranges, Node(bad, "p"))

    def test_split_source(self) -> None:
        self.assertEqual(split_source("127.0.0.1:5000"), (ipaddress.ip_address("127.0.0.1"), 5000))
        self.assertEqual(split_source("[::1]:53"), (ipaddress.ip_address("::1"), 53))
        self.assertEqual(split_source("::1:53"), (ipaddress.ip_address("::1"), 53))
        self.assertEqual(split_source("unknown"), (None, 0))
        self.assertEqual(split_source(""), (None, 0))


class RuleTests(SynchronousTestCase):
    def test_each_condition(self) -> None:
        src = ipaddress.ip_address("192.168.1.5")
        cases = [
            (field(port="53"), ctx(port=53), ctx(port=54)),
            (field(port="1000-2000"), ctx(port=2000), ctx(port=999)),
            (field(sourcePort="5000-5001"), ctx(source_port=5001), ctx(source_port=5002)),
            (field(network="udp"), ctx(network="udp"), ctx(network="tcp")),
            (field(network="tcp,udp"), ctx(network="udp"), None),
            (field(source=["192.168.0.0/16"]), ctx(source_ip=src), ctx()),
            (field(user=["a@x"]), ctx(user="a@x"), ctx(user="b@x")),
            (field(inboundTag=["in1", "in2"]), ctx(inbound_tag="in2"), ctx(inbound_tag="in3")),
            (field(ip=["8.8.8.0/24"]), ctx(host="8.8.8.8"), ctx(host="8.8.4.4")),
            (field(domain=["domain:example.com"]), ctx(), ctx(host="example.org")),
        ]
        for rule, yes, no in cases:
            r = router([rule])
            self.assertEqual(tag(r, yes), "block", rule)
            if no is not None:
                self.assertIsNone(tag(r, no), rule)

    def test_all_conditions_must_hold(self) -> None:
        r = router([field(domain=["example.com"], port="443", network="tcp")])
        self.assertEqual(tag(r, ctx()), "block")
        self.assertIsNone(tag(r, ctx(port=80)))
        self.assertIsNone(tag(r, ctx(network="udp")))

    def test_domain_rule_ignores_ip_targets(self) -> None:
        r = router([field(domain=["1"])])  # substring of "127.0.0.1", still no match
        self.assertIsNone(tag(r, ctx(host="127.0.0.1")))

    def test_first_match_wins(self) -> None:
        r = router([field("proxy", port="443"), field("block", domain=["example.com"])])
        self.assertEqual(r.route(ctx()), Route("proxy", 0))
        self.assertEqual(r.route(ctx(port=80)), Route("block", 1))
        self.assertEqual(r.route(ctx(host="other.test", port=80)), Route(None))

    def test_empty_lists_add_no_condition(self) -> None:
        """As V2Ray: ``[]`` is no condition; a list of only empty strings never matches."""
        r = router([field(domain=[], ip=[], user=[], inboundTag=[], network=[], port="443")])
        self.assertEqual(tag(r, ctx()), "block")
        r = router([field(user=[""], port="443")])
        self.assertIsNone(tag(r, ctx(user="")))
        self.assertRaises(ConfigError, router, [field(domain=[])])  # nothing left: no condition

    def test_protocol_rule_matches_the_sniffed_protocol(self) -> None:
        """As 4.34: a prefix of the sniffed protocol; nothing sniffed never matches."""
        r = router([field(protocol=["bittorrent"]), field("proxy", protocol="http,tls"),
                    field("direct", port="443")])
        self.assertEqual(tag(r, ctx()), "direct")
        self.assertEqual(tag(r, replace(ctx(), protocol="bittorrent")), "block")
        self.assertEqual(tag(r, replace(ctx(), protocol="http1")), "proxy")
        self.assertEqual(tag(r, replace(ctx(), protocol="tls")), "proxy")

    def test_unknown_protocol_warns(self) -> None:
        warnings: list[str] = []
        router([field(protocol=["quic"])], warnings=warnings)
        self.assertEqual(len(warnings), 1)
        self.assertIn("routing.rules[0].protocol[0]: 'quic'", warnings[0])


class DomainStrategyTests(SynchronousTestCase):
    RULES = [field("proxy", ip=["93.184.0.0/16"]), field("block", domain=["example.com"])]

    def test_as_is_never_resolves(self) -> None:
        r = router(self.RULES)
        self.assertEqual(r.route(ctx()), Route("block", 1))
        self.assertEqual(r.route(ctx(host="other.test")), Route(None))
        self.assertEqual(r.route(ctx(host="93.184.1.1")), Route("proxy", 0))

    def test_ip_on_demand_resolves_when_reaching_an_ip_rule(self) -> None:
        r = router(self.RULES, "IPOnDemand")
        self.assertEqual(r.route(ctx()), NeedIPs("example.com"))
        self.assertEqual(r.route(ctx().with_resolved(["93.184.216.34"])), Route("proxy", 0))
        self.assertEqual(r.route(ctx().with_resolved([])), Route("block", 1))
        # An earlier matching rule decides without a lookup; IP targets never need one.
        r = router([field("block", domain=["example.com"])] + self.RULES[:1], "ipondemand")
        self.assertEqual(r.route(ctx()), Route("block", 0))
        self.assertEqual(r.route(ctx(host="93.184.1.1")), Route("proxy", 1))
        # Other conditions that fail spare the lookup.
        r = router([field("proxy", ip=["1.0.0.0/8"], port="22")], "IPOnDemand")
        self.assertEqual(r.route(ctx()), Route(None))

    def test_ip_if_non_match_tries_domains_first(self) -> None:
        r = router(self.RULES, "IPIfNonMatch")
        self.assertEqual(r.route(ctx()), Route("block", 1))  # no lookup: a domain rule matched
        self.assertEqual(r.route(ctx(host="x.test")), NeedIPs("x.test"))
        self.assertEqual(r.route(ctx(host="x.test").with_resolved(["93.184.1.2"])),
                         Route("proxy", 0))
        self.assertEqual(r.route(ctx(host="x.test").with_resolved(["1.1.1.1"])), Route(None))
        # Without any IP rule there is nothing to resolve for.
        r = router(self.RULES[1:], "IPIfNonMatch")
        self.assertEqual(r.route(ctx(host="x.test")), Route(None))

    def test_decide_without_resolver(self) -> None:
        r = router(self.RULES, "IPOnDemand")
        self.assertEqual(r.decide(ctx()), Route("block", 1))

    def test_spellings(self) -> None:
        for name, want in (("asis", "AsIs"), ("IpIfNonMatch", "IPIfNonMatch"),
                           ("ip_on_demand", "IPOnDemand")):
            self.assertEqual(router([], name).domain_strategy, want)
        warnings: list[str] = []
        self.assertEqual(router([], "AlwaysIP", warnings).domain_strategy, "AsIs")
        self.assertEqual(len(warnings), 1)


OUTBOUNDS = [{"protocol": "freedom", "tag": "direct"}, {"protocol": "blackhole", "tag": "block"}]


class ConfigTests(ConfigErrorMixin, SynchronousTestCase):
    def setUp(self) -> None:
        # Geo data lookups see an empty asset directory (no geosite.dat / geoip.dat).
        self.assets = self.mktemp()
        os.mkdir(self.assets)
        self.patch(os, "environ", {**os.environ, "V2RAY_LOCATION_ASSET": self.assets})

    def configFor(self, routing: Any) -> Any:
        return {"outbounds": OUTBOUNDS, "routing": routing}

    def test_errors_name_the_path(self) -> None:
        ok = field(domain=["a.test"])
        cases = [
            ({"rules": [ok, field(domain=["a", "geosite:cn"])]}, "routing.rules[1].domain[1]",
             "geosite.dat not found"),
            ({"rules": [field(domain="ext:h2y.dat:gfw")]}, "routing.rules[0].domain",
             "h2y.dat not found"),
            ({"rules": [field(domain="ext:h2y.dat")]}, "routing.rules[0].domain",
             "expected ext:FILE:NAME"),
            ({"rules": [field(domain="geosite:@ads")]}, "routing.rules[0].domain",
             "empty list name"),
            ({"rules": [field(ip=["10.0.0.0/8", "geoip:cn"])]}, "routing.rules[0].ip[1]",
             "geoip.dat not found"),
            ({"rules": [field(ip=["geoip:!"])]}, "routing.rules[0].ip[0]",
             "empty country code"),
            ({"rules": [field(source=["geoip:us"])]}, "routing.rules[0].source[0]", "geoip"),
            ({"rules": [ok, field("blok", port="53")]}, "routing.rules[1].outboundTag",
             "no outbound is tagged 'blok' (outbound tags: block, direct)"),
            ({"rules": [{"type": "field", "port": "53", "balancerTag": "b"}]},
             "routing.rules[0].balancerTag", "no balancer is tagged 'b' (routing.balancers "
             "tags: none)"),
            ({"rules": [field(port="53", attrs="attrs[':method'] == 'GET'")]},
             "routing.rules[0].attrs", "not supported"),
            ({"rules": [{"type": "field", "port": "53"}]}, "routing.rules[0].outboundTag",
             "is required"),
            ({"rules": [ok], "balancers": [{"tag": "", "selector": ["d"]}]},
             "routing.balancers[0].tag", "empty balancer tag"),
            ({"rules": [ok], "balancers": [{"tag": "b", "selector": []}]},
             "routing.balancers[0].selector", "empty selector"),
            ({"rules": [{"outboundTag": "block", "port": 53}]}, "routing.rules[0].type",
             '"field"'),
            ({"rules": [{"type": "chinaip", "outboundTag": "block"}]}, "routing.rules[0].type",
             '"field"'),
            ({"rules": [field(ip=["1.2.3.4/33"])]}, "routing.rules[0].ip[0]", "prefix length"),
            ({"rules": [field(ip=["example.com"])]}, "routing.rules[0].ip[0]", "IP or CIDR"),
            ({"rules": [field(port="70000")]}, "routing.rules[0].port", "0-65535"),
            ({"rules": [field(sourcePort="b-a")]}, "routing.rules[0].sourcePort", "port"),
            ({"rules": [field(network="icmp")]}, "routing.rules[0].network", '"tcp"'),
            ({"rules": [field(domain=["regexp:(["])]}, "routing.rules[0].domain[0]",
             "invalid regexp"),
            ({"rules": [field(domain=["full:"])]}, "routing.rules[0].domain[0]", "empty full"),
            ({"rules": [field()]}, "routing.rules[0]", "no conditions"),
            ({"rules": ok}, "routing.rules", "expected an array"),
            ({"domainStrategy": "IPIfNonMatched"}, "routing.domainStrategy", "IPIfNonMatch"),
        ]
        for routing, path, words in cases:
            with self.assertRaises(ConfigError, msg=routing) as cm:
                parse_config({"outbounds": OUTBOUNDS, "routing": routing})
            self.assertEqual(cm.exception.path, path, routing)
            self.assertIn(words, cm.exception.message, routing)

    def test_full_message(self) -> None:
        self.assertConfigError(
            {"rules": [field(domain=["geosite:cn"])]},
            f"routing.rules[0].domain[0]: 'geosite:cn': geosite.dat not found (looked in "
            f"{self.assets}, /usr/local/share/v2ray, /usr/share/v2ray; set "
            "V2RAY_LOCATION_ASSET or vtwist's --assets DIR)")

    def test_parsed(self) -> None:
        warnings: list[str] = []
        c = parse_config({"outbounds": OUTBOUNDS, "routing": {
            "domainStrategy": "IPOnDemand",
            "rules": [field(domain=["domain:ads.test"]), field("direct", ip=["geoip:private"])],
            "settings": {"rules": [field(port="25")]}}}, warnings.append)
        self.assertEqual(c.routing.domain_strategy, "IPOnDemand")
        self.assertEqual([r.outbound_tag for r in c.routing.rules], ["block", "direct", "block"])
        self.assertEqual(len(warnings), 1)
        self.assertIn("routing: settings is deprecated", warnings[0])

    def test_no_routing(self) -> None:
        c = parse_config({"outbounds": OUTBOUNDS}, self.fail)
        self.assertEqual(c.routing.rules, [])

    def test_unknown_rule_key_warns(self) -> None:
        warnings: list[str] = []
        parse_config({"outbounds": OUTBOUNDS, "routing": {"rules": [field(port=1, prot=2)]}},
                     warnings.append)
        self.assertEqual(warnings, ['routing.rules[0].prot: unknown field, ignored '
                                    '(did you mean "port"?)'])


def tunnels(dispatcher: Dispatcher) -> TunnelService:
    """The tunnel service over ``dispatcher``: it connects and opens UDP sessions."""
    return TunnelService(dispatcher, Clock())


class FakeResolver:
    def __init__(self) -> None:
        self.asked: list[tuple[str, Deferred[list[str]]]] = []

    def __call__(self, host: str) -> Deferred[list[str]]:
        d: Deferred[list[str]] = Deferred()
        self.asked.append((host, d))
        return d


class DispatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.direct, self.block, self.proxy = (FakeOutbound(t) for t in TAGS)
        self.resolver = FakeResolver()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)

    def dispatcher(self, rules: list[dict[str, Any]], strategy: str | None = None) -> Dispatcher:
        return Dispatcher([self.direct, self.block, self.proxy], router=router(rules, strategy),
                          resolver=self.resolver)

    def access(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.logs.events if e["log_namespace"] == "vtwist.access"]

    def test_connect_follows_rules_and_logs_the_outbound(self) -> None:
        d = self.dispatcher([field(domain=["domain:ads.test"])])
        tunnels(d).connect(Destination.tcp("x.ads.test", 443), inbound_tag="socks-in",
                  source="127.0.0.1:5000")
        tunnels(d).connect(Destination.tcp("example.com", 443), inbound_tag="socks-in",
                  source="127.0.0.1:5001")
        self.assertEqual(len(self.block.connects), 1)
        self.assertEqual(len(self.direct.connects), 1)
        self.assertEqual(self.access(), [
            "from 127.0.0.1:5000 accepted tcp:x.ads.test:443 [socks-in >> block]",
            "from 127.0.0.1:5001 accepted tcp:example.com:443 [socks-in >> direct]"])
        self.assertEqual(self.resolver.asked, [])
        from twisted.logger import formatEvent

        debug = [formatEvent(e) for e in self.logs.events if e["log_namespace"] == "vtwist.dispatch"]
        self.assertEqual(debug, ["routing: tcp:x.ads.test:443 matches routing.rules[0] -> block"])

    def test_outbound_for_uses_source_user_and_inbound(self) -> None:
        d = self.dispatcher([field("block", user=["bad@x"]),
                             field("proxy", source=["10.0.0.0/8"], sourcePort="1-1024"),
                             field("block", inboundTag=["vmess-in"])])
        dest = Destination.tcp("example.com", 80)
        self.assertIs(d.outboundFor(dest), self.direct)
        self.assertIs(d.outboundFor(dest, email="bad@x"), self.block)
        self.assertIs(d.outboundFor(dest, source="10.1.1.1:1000"), self.proxy)
        self.assertIs(d.outboundFor(dest, source="10.1.1.1:5000"), self.direct)
        self.assertIs(d.outboundFor(dest, "vmess-in"), self.block)
        self.assertIs(d.outboundFor(dest, "socks-in"), self.direct)

    def test_no_rules_no_outbounds(self) -> None:
        d = Dispatcher([self.direct], router=Router())
        self.assertIs(d.outboundFor(Destination.tcp("a.test", 1)), self.direct)
        d = Dispatcher([], router=router([field(port="1")]))
        self.assertRaises(NoOutbound, d.outboundFor, Destination.tcp("a.test", 1))
        self.failureResultOf(tunnels(d).connect(Destination.tcp("a.test", 1)), NoOutbound)
        self.assertRaises(NoOutbound, tunnels(d).openPackets, Destination.udp("a.test", 1),
                          lambda *a: None, lambda: None)

    def test_resolves_only_when_needed_then_connects(self) -> None:
        d = self.dispatcher([field("proxy", ip=["10.0.0.0/8"]), field(port="25")], "IPOnDemand")
        result = tunnels(d).connect(Destination.tcp("intranet.test", 80), inbound_tag="in")
        self.assertNoResult(result)
        self.assertEqual([h for h, _ in self.resolver.asked], ["intranet.test"])
        self.assertEqual(self.access(), [])
        self.resolver.asked[0][1].callback(["10.1.2.3"])
        self.assertEqual(len(self.proxy.connects), 1)
        self.assertIn("[in >> proxy]", self.access()[0])
        # A target that resolves elsewhere falls through to the port rule / the default.
        tunnels(d).connect(Destination.tcp("mail.test", 25))
        self.resolver.asked[1][1].callback(["1.1.1.1"])
        self.assertEqual(len(self.block.connects), 1)
        tunnels(d).connect(Destination.tcp("10.0.0.1", 80))  # an IP target needs no lookup
        self.assertEqual(len(self.resolver.asked), 2)
        self.assertEqual(len(self.proxy.connects), 2)

    def test_timeout_cancels_the_lookup(self) -> None:
        d = self.dispatcher([field("proxy", ip=["10.0.0.0/8"])], "IPIfNonMatch")
        result = tunnels(d).connect(Destination.tcp("slow.test", 80))
        result.cancel()
        self.failureResultOf(result)
        self.assertEqual(self.direct.connects + self.proxy.connects, [])

    def test_without_resolver_ip_rules_see_no_ips(self) -> None:
        d = Dispatcher([self.direct, self.block], router=router(
            [field(ip=["0.0.0.0/0"])], "IPOnDemand"))
        tunnels(d).connect(Destination.tcp("a.test", 80))
        self.assertEqual(len(self.direct.connects), 1)

    def test_udp_waits_for_the_decision(self) -> None:
        d = self.dispatcher([field("proxy", ip=["10.0.0.0/8"])], "IPOnDemand")
        dest = Destination.udp("dns.test", 53)
        got: list[Any] = []
        session = tunnels(d).openPackets(dest, lambda data, src: got.append(data), lambda: None)
        self.assertIsInstance(session, PacketTunnel)
        for i in range(MAX_QUEUED + 5):
            session.send(b"%d" % i, dest)
        self.resolver.asked[0][1].callback(["10.0.0.53"])
        [real] = self.proxy.sessions
        self.assertEqual(len(real.sent), MAX_QUEUED)
        self.assertEqual(real.sent[0], (b"0", dest))
        session.send(b"later", dest)
        self.assertEqual(real.sent[-1], (b"later", dest))
        real.onPacket(b"reply", dest)
        self.assertEqual(got, [b"reply"])
        session.close()
        self.assertTrue(real.closed)

    def test_udp_closed_before_the_decision(self) -> None:
        d = self.dispatcher([field("proxy", ip=["10.0.0.0/8"])], "IPOnDemand")
        closes: list[int] = []
        session = tunnels(d).openPackets(Destination.udp("dns.test", 53), lambda *a: None,
                                  lambda: closes.append(1))
        session.send(b"x", Destination.udp("dns.test", 53))
        session.close()
        self.resolver.asked[0][1].callback(["10.0.0.53"])
        self.assertEqual(self.proxy.sessions, [])
        self.assertEqual(closes, [])

    def test_udp_decided_at_once(self) -> None:
        d = self.dispatcher([field(network="udp", port="53")])
        session = tunnels(d).openPackets(Destination.udp("dns.test", 53), lambda *a: None,
                                  lambda: None)
        self.assertEqual(self.block.sessions, [session.session])
