"""Sniffing end to end: a client that connects by IP and sends a TLS ClientHello (or an HTTP
request) for a domain is routed by the domain rule, by vtwist as by V2Ray 4.34 on the same
config. Two freedom outbounds redirect to two local servers, so the server that received the
bytes names the outbound that carried them."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port
from tests.test_sniff import HTTP_GET, client_hello
from tests.test_socks_e2e import socks_connect
from vtwist.config.loader import parse_config
from vtwist.service import build_service
from vtwist.testing.doubles import Recorder

#: An address nobody dials: the freedom outbounds redirect to the local servers.
TARGET = "198.51.100.7"


def sniff_config(socks_port: int, picked_port: int, default_port: int) -> dict[str, Any]:
    """SOCKS in with sniffing; domain:example.test goes to "picked", the rest to "direct"."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": socks_port,
                      "settings": {"auth": "noauth"},
                      "sniffing": {"enabled": True, "destOverride": ["http", "tls"]}}],
        "outbounds": [
            {"protocol": "freedom", "tag": "direct",
             "settings": {"redirect": f"127.0.0.1:{default_port}"}},
            {"protocol": "freedom", "tag": "picked",
             "settings": {"redirect": f"127.0.0.1:{picked_port}"}}],
        "routing": {"rules": [{"type": "field", "domain": ["domain:example.test"],
                               "outboundTag": "picked"}]},
    }


class _Sniffing:
    """The same cases for either implementation; subclasses start it on ``self.socks``."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.servers: dict[str, list[Recorder]] = {"picked": [], "direct": []}
        ports = {}
        for name, seen in self.servers.items():
            def build(seen: list[Recorder] = seen) -> Recorder:
                recorder = Recorder()
                seen.append(recorder)
                return recorder

            port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                protocol.Factory.forProtocol(build))
            self.addCleanup(port.stopListening)
            ports[name] = port.getHost().port
        self.socks = free_port()
        yield self.start(sniff_config(self.socks, ports["picked"], ports["direct"]))

    def start(self, config: dict[str, Any]) -> Any:
        raise NotImplementedError

    @defer.inlineCallbacks
    def send(self, payload: bytes) -> Any:
        """Connect to TARGET:443 through SOCKS, send ``payload``, wait until a server has it."""
        sock = yield threads.deferToThread(socks_connect, self.socks, TARGET, 443)
        self.addCleanup(sock.close)
        sock.sendall(payload)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = {name: b"".join(bytes(r.data) for r in seen)
                   for name, seen in self.servers.items()}
            if any(len(data) >= len(payload) for data in got.values()):
                return got
            yield threads.deferToThread(time.sleep, 0.02)
        self.fail(f"no server received the {len(payload)} bytes")

    @defer.inlineCallbacks
    def test_tls_sni_routes_by_domain(self) -> Any:
        hello = client_hello("www.example.test")
        got = yield self.send(hello)
        self.assertEqual(got, {"picked": hello, "direct": b""})

    @defer.inlineCallbacks
    def test_http_host_routes_by_domain(self) -> Any:
        got = yield self.send(HTTP_GET)
        self.assertEqual(got, {"picked": HTTP_GET, "direct": b""})

    @defer.inlineCallbacks
    def test_other_domain_takes_the_default(self) -> Any:
        hello = client_hello("other.test")
        got = yield self.send(hello)
        self.assertEqual(got, {"picked": b"", "direct": hello})


class VTwistSniffing(_Sniffing, TestCase):
    """vtwist's tunnel sniffs."""

    def start(self, config: dict[str, Any]) -> Any:
        service = build_service(parse_config(config), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service.whenListening()


class V2RaySniffing(_Sniffing, TestCase):
    """V2Ray 4.34 on the same config routes the same way (the reference behaviour)."""

    def start(self, config: dict[str, Any]) -> Any:
        v2ray = V2Ray(config)
        self.addCleanup(v2ray.stop)
        return defer.ensureDeferred(v2ray.wait_port(self.socks))
