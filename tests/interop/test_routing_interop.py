"""Routing decisions of vtwist and the real V2Ray 4.34 side by side, from one config.

Each config has a SOCKS inbound and two outbounds: ``direct`` (freedom redirected to a local
web server, so no name ever leaves the machine) and ``block`` (blackhole answering HTTP 403).
curl asks both proxies for the same hosts; each must block exactly the expected ones. Only
names that are blocked, IP literals and ``localhost`` are looked up under IPOnDemand /
IPIfNonMatch, so no DNS query leaves loopback.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port
from tests.services import serve_web, start_service

TIMEOUT = 10


def block(**conditions: Any) -> dict[str, Any]:
    return {"type": "field", "outboundTag": "block", **conditions}


class _RoutingInterop:
    """Mixed into one TestCase per domainStrategy."""

    timeout = 60
    routing: dict[str, Any] = {}
    expected: dict[str, int] = {}  # host -> HTTP status through the proxy

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.web_port = serve_web(self, {b"hello": b"hello\n"})
        self.vtwist_port, self.v2ray_port = free_port(), free_port()
        listening = start_service(self.config(self.vtwist_port), self)
        self.addCleanup(task.deferLater, reactor, 1.1, lambda: None)  # blackhole's close delay
        yield listening
        self.v2ray = V2Ray(self.config(self.v2ray_port))
        self.addCleanup(self.v2ray.stop)
        yield defer.Deferred.fromCoroutine(self.v2ray.wait_port(self.v2ray_port))

    def config(self, port: int) -> dict[str, Any]:
        return {
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": port, "settings": {"auth": "noauth"}}],
            "outbounds": [
                {"tag": "direct", "protocol": "freedom",
                 "settings": {"redirect": f"127.0.0.1:{self.web_port}"}},
                {"tag": "block", "protocol": "blackhole",
                 "settings": {"response": {"type": "http"}}}],
            "routing": self.routing}

    @defer.inlineCallbacks
    def status(self, proxy: int, host: str) -> Any:
        url_host = f"[{host}]" if ":" in host else host
        out, err, code = yield getProcessOutputAndValue(
            "curl", ["-sS", "-o", "/dev/null", "--max-time", str(TIMEOUT), "-w", "%{http_code}",
                     "--socks5-hostname", f"127.0.0.1:{proxy}", f"http://{url_host}:8080/hello"],
            env=dict(os.environ))
        return int(out or 0) if code == 0 else f"curl exit {code}: {err.decode().strip()}"

    @defer.inlineCallbacks
    def test_same_decisions(self) -> Any:
        hosts = sorted(self.expected)
        got: dict[str, dict[str, Any]] = {"v2ray": {}, "vtwist": {}}
        for name, port in (("v2ray", self.v2ray_port), ("vtwist", self.vtwist_port)):
            results = yield defer.gatherResults([self.status(port, h) for h in hosts])
            got[name] = dict(zip(hosts, results, strict=True))
        self.assertEqual(got["v2ray"], self.expected, "V2Ray itself")
        self.assertEqual(got["vtwist"], got["v2ray"])


class AsIsInterop(_RoutingInterop, TestCase):
    routing = {"rules": [
        block(domain=["domain:example.com", "full:full.test", "keyword:kw", r"regexp:^re\d+\.test$",
                      "plainword", "dotless:intra"]),
        block(ip=["127.0.0.2", "10.9.0.0/16"]),
        block(port="8080", domain="ports.test"),  # every condition must hold
        block(network="udp", domain=["udp.test"]),
    ]}
    expected = {
        "example.com": 403, "a.b.example.com": 403, "badexample.com": 200,
        "example.com.cn": 200, "full.test": 403, "www.full.test": 200, "akwz.test": 403,
        "re12.test": 403, "re12x.test": 200, "x-plainword-y.test": 403, "myintranet": 403,
        "intra.net": 200, "localhost": 200, "127.0.0.2": 403, "127.0.0.1": 200,
        "10.9.8.7": 403, "10.10.0.1": 200, "ports.test": 403, "udp.test": 200,
    }


class IPOnDemandInterop(_RoutingInterop, TestCase):
    routing = {"domainStrategy": "IPOnDemand", "rules": [
        block(domain=["full:full.test"]),
        block(ip=["127.0.0.0/8"]),
    ]}
    expected = {"full.test": 403, "localhost": 403, "127.0.0.1": 403, "10.0.0.1": 200}


class IPIfNonMatchInterop(_RoutingInterop, TestCase):
    routing = {"domainStrategy": "IPIfNonMatch", "rules": [
        block(ip=["127.0.0.0/8"]),
        {"type": "field", "domain": ["full:localhost.direct"], "outboundTag": "direct"},
    ]}
    expected = {"localhost": 403, "localhost.direct": 200, "127.0.0.1": 403, "10.0.0.1": 200}
