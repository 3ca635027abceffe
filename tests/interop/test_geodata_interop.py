"""Geo data routing of vtwist and the real V2Ray 4.34 side by side, from the same files.

Generated ``geoip.dat`` / ``geosite.dat`` / ``ext:`` files (vtwist.testing.geodata) sit in one
directory that both read through ``V2RAY_LOCATION_ASSET``. Every outbound is a freedom
redirected to its own local server, which answers with the outbound's name, so a SOCKS5
connection through either proxy tells which outbound took it. A few hundred destinations,
domains and IPs (v4 and v6) mixed, must reach the same outbound through both.

V2Ray 4.34 has no ``geoip:!CC``: its config spells the negation out (``geoip:us`` to the
default outbound, then everything else), which routes the same when it is the last IP rule.
The balancer picks at random in both: its destinations must reach one of its outbounds.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port, named_servers
from tests.services import start_service
from vtwist.proxy.socks import codec
from vtwist.testing.geodata import Samples, generate

OUTBOUNDS = ("default", "ads", "block", "direct", "proxy", "not-us", "src", "bal-a", "bal-b")
BALANCED = {"bal-a", "bal-b"}
TIMEOUT = 20


class Ident(Protocol):
    """Says which outbound this is, then closes."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name.encode())  # type: ignore[attr-defined]
        self.transport.loseConnection()


def rule(tag: str, **conditions: Any) -> dict[str, Any]:
    return {"type": "field", "outboundTag": tag, **conditions}


def rules(v2ray: bool) -> list[dict[str, Any]]:
    """The routing rules; ``v2ray``: spell out the negation 4.34 lacks."""
    out = [
        rule("ads", domain=["geosite:category-ads-all", "ext:ext-site.dat:blocked@ads"]),
        rule("ads", domain=["geosite:cn@ads"]),
        rule("block", domain=["ext:ext-site.dat:blocked", "ext-domain:ext-site.dat:work"]),
        rule("direct", domain=["geosite:geolocation-!cn@cn"]),
        rule("direct", domain=["geosite:cn", "geosite:geolocation-cn"]),
        {"type": "field", "domain": ["geosite:site0001", "geosite:site0002@cn"],
         "balancerTag": "bal"},
        rule("proxy", domain=["geosite:geolocation-!cn"]),
        rule("block", ip=["geoip:private", "ext:ext-ip.dat:office", "ext-ip:ext-ip.dat:lab"]),
        rule("src", source=["geoip:private"], port="81"),
        rule("direct", ip=["geoip:cn", "geoip:JP"]),
    ]
    if v2ray:
        out += [rule("default", ip=["geoip:us"]), rule("not-us", ip=["0.0.0.0/0", "::/0"])]
    else:
        out += [rule("not-us", ip=["geoip:!us"])]
    return out


def destinations(samples: Samples, rng: random.Random) -> list[tuple[str, int]]:
    """Domains and addresses in and around the lists (port 81 for a few: the source rule)."""
    hosts: list[str] = []
    for code, names in samples.domains.items():
        if not code.startswith("site") or code in ("site0001", "site0002", "site0003"):
            hosts += names
    for names in samples.attr_domains.values():
        hosts += names
    hosts += samples.other_domains[:20]
    hosts += [f"sub.{h}" for h in hosts[::7] if not h.startswith("x")]
    for code in ("cn", "us", "jp", "private", "ext-ip.dat:office", "ext-ip.dat:lab"):
        hosts += samples.ips[code]
    others = sorted(c for c in samples.ips if c not in ("cn", "us", "jp"))
    for code in rng.sample(others, 40):
        hosts += samples.ips[code][:2]
    hosts += samples.unlisted_ips
    hosts = list(dict.fromkeys(hosts))
    return [(h, 81 if i % 23 == 0 else 80) for i, h in enumerate(hosts)]


def which_outbound(proxy: int, host: str, port: int) -> str:
    """SOCKS5 CONNECT to ``host:port`` through ``proxy``; the outbound's name it reads."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as sock:
        sock.sendall(codec.client_greeting((codec.METHOD_NO_AUTH,)))
        sock.sendall(codec.client_request(codec.CMD_CONNECT, host, port))
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    # method choice (2 bytes), then the reply (10 bytes for an IPv4 bound address)
    if len(data) < 2 + 4:
        return f"no answer ({data!r})"
    parsed = codec.parse_reply(data[2:])
    if not isinstance(parsed, tuple) or parsed[0] != 0:
        return f"refused ({data!r})"
    return data[2 + parsed[3]:].decode(errors="replace")


class GeoDataRoutingInterop(TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.assets = os.path.abspath(self.mktemp())
        self.samples = generate(self.assets, scale=0.01, seed=14)
        old = os.environ.get("V2RAY_LOCATION_ASSET")
        os.environ["V2RAY_LOCATION_ASSET"] = self.assets  # both read the same files

        def restore() -> None:
            if old is None:
                os.environ.pop("V2RAY_LOCATION_ASSET", None)
            else:
                os.environ["V2RAY_LOCATION_ASSET"] = old

        self.addCleanup(restore)
        self.ports = named_servers(self, OUTBOUNDS, Ident)
        self.vtwist_port, self.v2ray_port = free_port(), free_port()
        yield start_service(self.config(self.vtwist_port, v2ray=False), self)
        self.v2ray = V2Ray(self.config(self.v2ray_port, v2ray=True))
        self.addCleanup(self.v2ray.stop)
        yield defer.Deferred.fromCoroutine(self.v2ray.wait_port(self.v2ray_port, timeout=60))
        reactor.suggestThreadPoolSize(16)

    def config(self, port: int, v2ray: bool) -> dict[str, Any]:
        return {
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": port, "settings": {"auth": "noauth"}}],
            "outbounds": [{"tag": name, "protocol": "freedom",
                           "settings": {"redirect": f"127.0.0.1:{self.ports[name]}"}}
                          for name in OUTBOUNDS],
            "routing": {"domainStrategy": "AsIs", "rules": rules(v2ray),
                        "balancers": [{"tag": "bal", "selector": ["bal-"]}]}}

    @defer.inlineCallbacks
    def test_same_outbound_for_every_destination(self) -> Any:
        dests = destinations(self.samples, random.Random(14))
        self.assertGreater(len(dests), 250)
        got: dict[str, dict[tuple[str, int], str]] = {}
        for name, port in (("v2ray", self.v2ray_port), ("vtwist", self.vtwist_port)):
            results = yield defer.gatherResults(
                [threads.deferToThread(which_outbound, port, h, p) for h, p in dests])
            got[name] = dict(zip(dests, results, strict=True))

        def norm(tag: str) -> str:
            return "balancer" if tag in BALANCED else tag

        v2ray = {d: norm(t) for d, t in got["v2ray"].items()}
        vtwist = {d: norm(t) for d, t in got["vtwist"].items()}
        # V2Ray answered for every destination, and every rule form took some of them.
        self.assertEqual(set(v2ray.values()),
                         {"default", "ads", "block", "direct", "proxy", "not-us", "src",
                          "balancer"}, v2ray)
        differ = {d: (v2ray[d], vtwist[d]) for d in dests if v2ray[d] != vtwist[d]}
        self.assertEqual(differ, {}, "destination: (V2Ray, vtwist)")
        # Both balance: each side used both of the balancer's outbounds... when it had
        # enough tries to (a handful of names go to it).
        tries = sum(1 for d in dests if v2ray[d] == "balancer")
        if tries >= 8:
            for name in ("v2ray", "vtwist"):
                picked = {t for t in got[name].values() if t in BALANCED}
                self.assertEqual(picked, BALANCED, name)
