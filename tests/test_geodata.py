"""Geo data: the lazy protobuf reader, the matchers built from it, asset lookup, the rule
forms (geosite:, @attr, geoip:, geoip:!, ext:) and damaged files (a clean ConfigError)."""

from __future__ import annotations

import ipaddress
import os
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.config.node import Node
from vtwist.routing import RouteContext
from vtwist.routing.geodata import assets as assets_module
from vtwist.routing.geodata.assets import GeoAssets, asset_dirs
from vtwist.routing.geodata.build import geoip_set, geosite_matcher
from vtwist.routing.geodata.wire import (
    DOMAIN,
    FULL,
    PLAIN,
    REGEX,
    GeoDataError,
    encode_cidr,
    encode_geoip,
    index,
)
from vtwist.routing.parse import domain_matcher, ip_matcher, parse_routing
from vtwist.testing.geodata import generate, write_geoip, write_geosite

IP = ipaddress.ip_address

GEOIP = {
    "cn": [(IP("1.0.1.0").packed, 24), (IP("1.0.8.0").packed, 21), (IP("240e::").packed, 20)],
    "us": [(IP("3.0.0.0").packed, 8), (IP("2600::").packed, 12)],
    "private": [(IP("10.0.0.0").packed, 8), (IP("fc00::").packed, 7)],
}
GEOSITE = {
    "cn": [(DOMAIN, "baidu.com", ()), (FULL, "www.qq.com", ()), (PLAIN, "taobao", ()),
           (REGEX, r"^cdn\d+\.example\.cn$", ()), (DOMAIN, "ads.cn", ("ads",)),
           (DOMAIN, "both.cn", ("ads", "cn"))],
    "google": [(DOMAIN, "google.com", ()), (DOMAIN, "google.cn", ("cn",))],
    "CATEGORY-ADS-ALL": [(DOMAIN, "doubleclick.net", ("ads",))],
}


def write_files(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    write_geoip(os.path.join(directory, "geoip.dat"), GEOIP)
    write_geosite(os.path.join(directory, "geosite.dat"), GEOSITE)
    write_geosite(os.path.join(directory, "my.dat"), {"work": [(FULL, "intra.work", ())]})
    write_geoip(os.path.join(directory, "myip.dat"), {"lab": [(IP("192.0.2.0").packed, 24)]})


def raw(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class WireTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        write_files(self.dir)
        self.geoip = raw(os.path.join(self.dir, "geoip.dat"))
        self.geosite = raw(os.path.join(self.dir, "geosite.dat"))

    def test_index_reads_codes_only(self) -> None:
        entries = index(self.geoip, len(self.geoip))
        self.assertEqual(sorted(entries), ["cn", "private", "us"])
        self.assertEqual(entries["cn"].code, "CN")
        self.assertEqual(sorted(index(self.geosite, len(self.geosite))),
                         ["category-ads-all", "cn", "google"])

    def test_first_duplicate_wins(self) -> None:
        data = encode_geoip("XX", encode_cidr(IP("1.1.1.0").packed, 24)) + encode_geoip(
            "xx", encode_cidr(IP("2.2.2.0").packed, 24))
        ips = geoip_set(data, index(data, len(data))["xx"])
        self.assertIn(IP("1.1.1.1"), ips)
        self.assertNotIn(IP("2.2.2.2"), ips)

    def test_geoip_ranges(self) -> None:
        ips = geoip_set(self.geoip, index(self.geoip, len(self.geoip))["cn"])
        for inside in ("1.0.1.0", "1.0.1.255", "1.0.8.0", "1.0.15.255", "240e:fff::1"):
            self.assertIn(IP(inside), ips, inside)
        for outside in ("1.0.0.255", "1.0.2.0", "1.0.16.0", "240f::", "::ffff:1.0.2.0"):
            self.assertNotIn(IP(outside), ips, outside)
        self.assertIn(IP("::ffff:1.0.1.1"), ips)  # IPv4-mapped counts as IPv4

    def test_general_encodings_and_unknown_fields(self) -> None:
        """Field order swapped, prefix 0 left out, unknown fields (Xray's reverse_match)."""
        swapped = b"\x12\x08\x10\x10\x0a\x04" + IP("5.6.0.0").packed  # prefix first: /16
        whole = encode_cidr(IP("7.0.0.0").packed, 0)  # prefix 0: no prefix field
        extra = b"\x18\x01"  # GeoIP field 3 (varint), skipped
        data = encode_geoip("x", swapped + extra) + encode_geoip("y", whole)
        entries = index(data, len(data))
        x = geoip_set(data, entries["x"])
        self.assertIn(IP("5.6.255.255"), x)
        self.assertNotIn(IP("5.7.0.0"), x)
        y = geoip_set(data, entries["y"])
        self.assertIn(IP("200.1.2.3"), y)
        self.assertNotIn(IP("2001::1"), y)

    @given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=30),
           st.lists(st.integers(0, 2**32 - 1), max_size=30))
    @settings(max_examples=60, deadline=None)
    def test_membership_matches_ipaddress(self, cidrs: list[tuple[int, int]],
                                          probes: list[int]) -> None:
        data = encode_geoip("t", b"".join(encode_cidr(n.to_bytes(4, "big"), p)
                                          for n, p in cidrs))
        ips = geoip_set(data, index(data, len(data))["t"])
        nets = [ipaddress.ip_network((n, p), strict=False) for n, p in cidrs]
        for n in probes + [n for n, _ in cidrs]:
            address = ipaddress.IPv4Address(n)
            self.assertEqual(address in ips, any(address in net for net in nets), address)

    def test_geosite_kinds_and_attributes(self) -> None:
        entries = index(self.geosite, len(self.geosite))
        cn = geosite_matcher(self.geosite, entries["cn"])
        for name in ("baidu.com", "a.baidu.com", "www.qq.com", "mytaobao.net", "cdn12.example.cn",
                     "ads.cn", "x.both.cn"):
            self.assertTrue(cn.match(name), name)
        for name in ("baidu.com.hk", "qq.com", "a.www.qq.com", "cdnx.example.cn"):
            self.assertFalse(cn.match(name), name)
        ads = geosite_matcher(self.geosite, entries["cn"], ("ads",))
        self.assertEqual(sorted(ads.suffixes), ["ads.cn", "both.cn"])
        both = geosite_matcher(self.geosite, entries["cn"], ("ads", "cn"))  # every attribute
        self.assertEqual(sorted(both.suffixes), ["both.cn"])

    def test_truncated_anywhere_is_an_error_or_a_shorter_list(self) -> None:
        """Every cut either ends between entries or raises GeoDataError, nothing else."""
        for data in (self.geoip, self.geosite):
            for cut in range(len(data)):
                try:
                    entries = index(data, cut)
                    for entry in entries.values():
                        if data is self.geoip:
                            geoip_set(data, entry)
                        else:
                            geosite_matcher(data, entry)
                except GeoDataError:
                    pass

    @given(st.binary(max_size=200))
    @settings(max_examples=200, deadline=None)
    def test_garbage_raises_only_geodata_error(self, junk: bytes) -> None:
        for data in (junk, self.geoip[:40] + junk):
            try:
                for entry in index(data, len(data)).values():
                    geoip_set(data, entry)
                    list(geosite_matcher(data, entry).full)
            except GeoDataError:
                pass

    def test_generated_files_read_back(self) -> None:
        directory = self.mktemp()
        samples = generate(directory, scale=0.002, seed=7)
        geoip, geosite = (raw(os.path.join(directory, n)) for n in ("geoip.dat", "geosite.dat"))
        ip_entries, site_entries = index(geoip, len(geoip)), index(geosite, len(geosite))
        for code in ("cn", "us", "private"):
            ips = geoip_set(geoip, ip_entries[code])
            for address in samples.ips[code]:
                self.assertIn(IP(address), ips, (code, address))
        for code in ("cn", "geolocation-!cn", "category-ads-all", "private"):
            matcher = geosite_matcher(geosite, site_entries[code])
            for name in samples.domains[code]:
                self.assertTrue(matcher.match(name), (code, name))
        matcher = geosite_matcher(geosite, site_entries["cn"], ("ads",))
        for name in samples.attr_domains["cn@ads"]:
            self.assertTrue(matcher.match(name), name)


class AssetLookupTests(SynchronousTestCase):
    def test_order_as_v2ray(self) -> None:
        env = {"V2RAY_LOCATION_ASSET": "/env"}
        self.assertEqual(asset_dirs(["/cli"], env, "/bin/x"),
                         ["/cli", "/env", "/usr/local/share/v2ray", "/usr/share/v2ray"])
        self.assertEqual(asset_dirs([], {}, "/opt/v/python"),
                         ["/opt/v", "/usr/local/share/v2ray", "/usr/share/v2ray"])

    def test_first_directory_with_the_file(self) -> None:
        a, b = self.mktemp(), self.mktemp()
        write_files(b)
        os.makedirs(a)
        write_geosite(os.path.join(a, "my.dat"), {"work": [(FULL, "other.work", ())]})
        assets = GeoAssets([a, b])
        self.assertEqual(assets.locate("my.dat"), os.path.join(a, "my.dat"))
        self.assertEqual(assets.locate("geoip.dat"), os.path.join(b, "geoip.dat"))
        self.assertIsNone(assets.locate("nope.dat"))

    def test_cli_directory_comes_first(self) -> None:
        directory = self.mktemp()
        write_files(directory)
        self.patch(assets_module, "_extra_dirs", [])
        self.patch(os, "environ", {"V2RAY_LOCATION_ASSET": "/nonexistent"})
        assets = GeoAssets()
        self.assertIsNone(assets.locate("geoip.dat"))
        assets_module.add_asset_dir(directory)
        self.assertEqual(assets.locate("geoip.dat"), os.path.join(directory, "geoip.dat"))


OUTBOUNDS = [{"protocol": "freedom", "tag": "direct"}, {"protocol": "blackhole", "tag": "block"},
             {"protocol": "freedom", "tag": "proxy"}]


def field(tag: str = "block", **conditions: Any) -> dict[str, Any]:
    return {"type": "field", "outboundTag": tag, **conditions}


class RuleFormTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        write_files(self.dir)
        self.assets = GeoAssets([self.dir])

    def router(self, rules: list[dict[str, Any]], **routing: Any) -> Any:
        return parse_routing(Node({"rules": rules, **routing}, "routing"),
                             ["direct", "block", "proxy", "bal-a", "bal-b"], self.assets)

    def tag(self, router: Any, host: str, **kw: Any) -> str | None:
        return router.decide(RouteContext("tcp", host, 443, **kw)).tag

    def test_geosite_and_attributes(self) -> None:
        r = self.router([field(domain=["geosite:category-ads-all", "geosite:cn@ads"]),
                         field("proxy", domain=["geosite:google@cn"]),
                         field("direct", domain=["geosite:cn"])])
        self.assertEqual(self.tag(r, "x.doubleclick.net"), "block")
        self.assertEqual(self.tag(r, "ads.cn"), "block")
        self.assertEqual(self.tag(r, "baidu.com"), "direct")
        self.assertEqual(self.tag(r, "google.cn"), "proxy")
        self.assertIsNone(self.tag(r, "google.com"))

    def test_geoip_negation_and_ext(self) -> None:
        r = self.router([field(ip=["geoip:private", "ext:myip.dat:lab"]),
                         field("direct", ip=["geoip:cn"]),
                         field("proxy", ip=["geoip:!us"]),
                         field("direct", domain=["ext:my.dat:work"])])
        self.assertEqual(self.tag(r, "10.2.3.4"), "block")
        self.assertEqual(self.tag(r, "192.0.2.9"), "block")
        self.assertEqual(self.tag(r, "1.0.9.1"), "direct")
        self.assertEqual(self.tag(r, "8.8.8.8"), "proxy")  # not in us
        self.assertIsNone(self.tag(r, "3.3.3.3"))  # in us: the negation does not match
        self.assertEqual(self.tag(r, "2a00::1"), "proxy")
        self.assertIsNone(self.tag(r, "2600::1"))
        self.assertEqual(self.tag(r, "intra.work"), "direct")
        self.assertIsNone(self.tag(r, "example.org"))  # a domain has no IPs under AsIs

    def test_source_geoip(self) -> None:
        r = self.router([field(source=["geoip:cn"], port="443")])
        self.assertEqual(self.tag(r, "a.test", source_ip=IP("1.0.1.7")), "block")
        self.assertIsNone(self.tag(r, "a.test", source_ip=IP("3.1.1.1")))

    def test_each_list_decodes_once(self) -> None:
        r = self.router([field(domain=["geosite:cn"]), field("proxy", domain=["geosite:CN"]),
                         field(ip=["geoip:cn"]), field("direct", source=["geoip:cn"])])
        self.assertEqual(self.assets.decodes, 2)
        self.assertIs(r.rules[0].domains, r.rules[1].domains)  # the list itself, shared
        self.assertIs(r.rules[2].ips, r.rules[3].sources)
        domain_matcher(["geosite:cn"], "dns.hosts", self.assets)  # the dns section shares it
        self.assertEqual(self.assets.decodes, 2)

    def test_public_builders(self) -> None:
        hosts = domain_matcher(["baidu.com", "geosite:google"], "dns.hosts", self.assets,
                               plain="full")
        self.assertTrue(hosts.match("baidu.com"))
        self.assertFalse(hosts.match("a.baidu.com"))  # a bare host key is full:
        self.assertTrue(hosts.match("mail.google.com"))
        ips = ip_matcher(["geoip:cn", "9.9.9.9"], "dns.servers[0].expectIPs", self.assets)
        self.assertIn(IP("1.0.1.1"), ips)
        self.assertIn(IP("9.9.9.9"), ips)
        self.assertNotIn(IP("3.0.0.1"), ips)
        with self.assertRaises(ConfigError) as cm:
            ip_matcher(["1.1.1.1", "geoip:zz"], "dns.servers[0].expectIPs", self.assets)
        self.assertEqual(cm.exception.path, "dns.servers[0].expectIPs[1]")

    def test_private_is_built_in_without_a_file(self) -> None:
        empty = self.mktemp()
        os.makedirs(empty)
        ips = ip_matcher(["geoip:private"], "x", GeoAssets([empty]))
        self.assertIn(IP("192.168.1.1"), ips)
        self.assertNotIn(IP("8.8.8.8"), ips)

    def test_balancers(self) -> None:
        r = self.router([{"type": "field", "domain": ["geosite:cn"], "balancerTag": "b"}],
                        balancers=[{"tag": "b", "selector": ["bal-"]}])
        self.assertEqual(r.balancers, {"b": ("bal-",)})
        r.pick = random.Random(3).choice
        seen = {self.tag(r, "baidu.com") for _ in range(50)}
        self.assertEqual(seen, {"bal-a", "bal-b"})
        self.assertEqual(r.rules[0].balancer_tag, "b")
        # As 4.34, the selector looks at the outbounds there are at each decision.
        r.outbound_tags = ["direct", "bal-c"]
        self.assertEqual(self.tag(r, "baidu.com"), "bal-c")
        r.outbound_tags = ["direct"]
        self.assertIsNone(self.tag(r, "baidu.com"))  # none selected: the default

    def test_dispatcher_balances_over_its_live_outbounds(self) -> None:
        """An outbound the API adds joins the balancer; one it removes leaves it."""
        from vtwist.address import Destination
        from vtwist.testing.tunnels import FakeOutbound
        from vtwist.tunnel.dispatcher import Dispatcher

        r = self.router([{"type": "field", "port": "443", "balancerTag": "b"}],
                        balancers=[{"tag": "b", "selector": ["bal-"]}])
        r.pick = random.Random(1).choice
        direct, a, b = FakeOutbound("direct"), FakeOutbound("bal-a"), FakeOutbound("bal-b")
        dispatcher = Dispatcher([direct, a], router=r)
        dest = Destination.tcp("example.org", 443)
        self.assertEqual({dispatcher.outboundFor(dest).tag for _ in range(20)}, {"bal-a"})
        dispatcher.by_tag["bal-b"] = b  # as the HandlerService's AddOutbound does
        self.assertEqual({dispatcher.outboundFor(dest).tag for _ in range(40)},
                         {"bal-a", "bal-b"})
        del dispatcher.by_tag["bal-a"], dispatcher.by_tag["bal-b"]
        self.assertIs(dispatcher.outboundFor(dest), direct)  # none selected: the default

    def test_attribute_no_entry_carries_warns(self) -> None:
        warnings: list[str] = []
        r = parse_routing(Node({"rules": [field(domain=["geosite:google@nope"])]}, "routing",
                               warnings.append), ["block"], self.assets)
        self.assertIsNone(self.tag(r, "google.com"))
        self.assertEqual(len(warnings), 1)
        self.assertIn("routing.rules[0]: domain: its lists hold no domain", warnings[0])

    def test_balancer_selecting_nothing_warns(self) -> None:
        warnings: list[str] = []
        parse_routing(Node({"rules": [{"type": "field", "port": "1", "balancerTag": "b"}],
                            "balancers": [{"tag": "b", "selector": ["x"]}]},
                           "routing", warnings.append), ["direct"], self.assets)
        self.assertEqual(len(warnings), 1)
        self.assertIn("routing.balancers[0]: selector: ['x'] selects no outbound", warnings[0])

    def test_outbound_tag_wins_over_balancer(self) -> None:
        warnings: list[str] = []
        r = parse_routing(Node({"rules": [{"type": "field", "port": "443", "outboundTag": "block",
                                           "balancerTag": "b"}],
                                "balancers": [{"tag": "b", "selector": "dir"}]},
                               "routing", warnings.append), ["direct", "block"], self.assets)
        self.assertEqual(self.tag(r, "a.test"), "block")
        self.assertIn("balancerTag ignored", warnings[0])


class ErrorTests(SynchronousTestCase):
    """A missing file, code or damaged file is a ConfigError naming the path and the file."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        write_files(self.dir)
        self.patch(os, "environ", {**os.environ, "V2RAY_LOCATION_ASSET": self.dir})

    def error(self, rule: dict[str, Any]) -> ConfigError:
        with self.assertRaises(ConfigError) as cm:
            parse_config({"outbounds": OUTBOUNDS, "routing": {"rules": [field(port=1),
                                                                          rule]}})
        return cm.exception

    def test_missing_code(self) -> None:
        e = self.error(field(domain=["domain:a.test", "geosite:nope"]))
        self.assertEqual(e.path, "routing.rules[1].domain[1]")
        self.assertIn(f"no list 'nope' in {self.dir}/geosite.dat", e.message)
        e = self.error(field(ip=["ext:myip.dat:nope"]))
        self.assertIn("myip.dat", e.message)

    def test_missing_file(self) -> None:
        e = self.error(field(source=["ext:gone.dat:x"]))
        self.assertEqual(e.path, "routing.rules[1].source[0]")
        self.assertIn("gone.dat not found", e.message)

    def test_regexp_python_cannot_compile(self) -> None:
        """An RE2-only regexp in a list: a rule warns and leaves it out; strict use refuses."""
        write_geosite(os.path.join(self.dir, "re2.dat"), {"x": [
            (REGEX, r"^\pL+\.re2\.test$", ()), (DOMAIN, "kept.test", ())]})
        warnings: list[str] = []
        config = parse_config({"outbounds": OUTBOUNDS, "routing": {"rules": [
            field(domain=["ext:re2.dat:x"])]}}, warnings.append)
        rule = config.routing.rules[0]
        self.assertTrue(rule.domains.match("a.kept.test"))
        [warning] = [w for w in warnings if "re2.dat" in w]
        self.assertIn("routing.rules[0].domain[0]: 'ext:re2.dat:x': regexp", warning)
        self.assertIn("left out", warning)
        with self.assertRaises(ConfigError) as cm:
            domain_matcher(["ext:re2.dat:x"], "dns.hosts", GeoAssets([self.dir]))
        self.assertIn("regexp Python cannot compile", cm.exception.message)

    def test_damaged_file(self) -> None:
        path = os.path.join(self.dir, "geosite.dat")
        data = raw(path)
        entries = index(data, len(data))
        with open(path, "wb") as f:
            f.write(data[:entries["google"].end - 3])  # cut inside google's entry
        e = self.error(field(domain=["geosite:google"]))
        self.assertEqual(e.path, "routing.rules[1].domain[0]")
        self.assertIn(f"{path} is damaged or not a V2Ray geo data file", e.message)
        with open(path, "wb") as f:
            f.write(b"\x0a\xff\xff\xff\xff\x0f garbage")
        self.assertIn("is damaged", self.error(field(domain=["geosite:cn"])).message)

    def test_the_command_line_check_reports_without_a_traceback(self) -> None:
        """``vtwist check`` on a config whose geosite.dat is truncated: one clean line."""
        import subprocess
        import sys
        import tempfile

        path = os.path.join(self.dir, "geosite.dat")
        data = raw(path)
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write('{"outbounds": [{"protocol": "freedom", "tag": "d"}], "routing": {"rules": '
                    '[{"type": "field", "domain": ["geosite:google"], "outboundTag": "d"}]}}')
        self.addCleanup(os.unlink, f.name)
        result = subprocess.run([sys.executable, "-m", "vtwist", "check", f.name],
                                capture_output=True, text=True, env=dict(os.environ),
                                timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertIn("routing.rules[0].domain[0]: 'geosite:google'", result.stderr)
        self.assertIn("is damaged", result.stderr)


class FrozenMatcherTests(SynchronousTestCase):
    """freeze()'s shortcuts (joined regexps, keyword set) decide as the plain definition."""

    LABEL = st.text("abcx.-1", min_size=0, max_size=12)
    REGEXPS = [r"^a\.", r"b$", r"^(a|x)+\.b", r"c1", r"^[^.]+$", r"^[].a]x", r"^a|x-"]

    @given(st.lists(st.text("abcx1", min_size=1, max_size=4), max_size=60),
           st.lists(st.sampled_from(REGEXPS), max_size=7), st.lists(LABEL, max_size=20))
    @settings(max_examples=150, deadline=None)
    def test_same_as_definition(self, keywords: list[str], regexps: list[str],
                                domains: list[str]) -> None:
        import re

        from vtwist.routing.matcher import DomainMatcher

        m = DomainMatcher()
        for k in keywords:
            m.add("keyword", k)
        for r in regexps:
            m.add("regexp", r)
        m.freeze()
        for d in domains:
            expected = any(k in d for k in keywords) or any(re.search(r, d) for r in regexps)
            self.assertEqual(m.match(d), expected, (d, keywords, regexps))


class ReplacedFileTests(SynchronousTestCase):
    def test_a_replaced_file_is_read_again(self) -> None:
        """A reload after geosite.dat changed sees the new lists, even while the old
        router (holding the old list) is still alive."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "geosite.dat")
        write_geosite(path, {"x": [(FULL, "old.test", ())]})
        assets = GeoAssets([directory])
        old = domain_matcher(["geosite:x"], "r", assets)
        write_geosite(path, {"x": [(FULL, "new.test", ()), (FULL, "more.test", ())]})
        os.utime(path, ns=(1, 1))
        new = domain_matcher(["geosite:x"], "r", assets)
        self.assertTrue(old.match("old.test"))
        self.assertTrue(new.match("new.test"))
        self.assertFalse(new.match("old.test"))
