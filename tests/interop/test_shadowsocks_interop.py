"""Shadowsocks interop against the real V2Ray 4.34 on loopback.

Three pairings carry traffic from a SOCKS5 client through
``socks -> shadowsocks client == TCP/UDP == shadowsocks server -> freedom -> echo server``:

* vtwist client -> V2Ray server
* V2Ray client -> vtwist server
* vtwist client -> vtwist server

Every pairing runs every method (aes-128-gcm, aes-256-gcm, chacha20-poly1305, none; the
V2Ray side spells some by their aliases): a stream echo compared by sha256 (20 MB each way
for one method per pairing, 2 MB for the others, to keep the suite quick) and a UDP echo
through UDP ASSOCIATE. Per pairing also a domain and an IPv6 (::1) target.

One V2Ray server serves the vtwist-client class; the V2Ray-client pairing starts a V2Ray
client and a vtwist server on fresh ports per test (a port kept for a class is free between
its tests, and another test process may take it). The suite fails (never skips) when
/usr/bin/v2ray is missing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port
from tests.services import start_service

#: method as vtwist's config names it -> as the V2Ray config names it (aliases on purpose)
METHODS = {"aes-128-gcm": "aes-128-gcm", "aes-256-gcm": "aead_aes_256_gcm",
           "chacha20-poly1305": "chacha20-ietf-poly1305", "none": "plain"}
PASSWORD = "interop-ss-password"
BIG = 20 * 1024 * 1024
MEDIUM = 2 * 1024 * 1024
SMALL = 256 * 1024


def _name(method: str) -> str:
    return method.replace("-", "_")


def _ss_inbound(port: int, method: str, tag: str = "") -> dict[str, Any]:
    inbound = {"port": port, "listen": "127.0.0.1", "protocol": "shadowsocks",
               "settings": {"method": method, "password": PASSWORD, "network": "tcp,udp",
                            "email": f"{_name(method)}@test"}}
    if tag:
        inbound["tag"] = tag
    return inbound


def _ss_outbound(port: int, method: str, tag: str = "") -> dict[str, Any]:
    out = {"protocol": "shadowsocks", "settings": {"servers": [{
        "address": "127.0.0.1", "port": port, "method": method, "password": PASSWORD}]}}
    if tag:
        out["tag"] = tag
    return out


def _socks_inbound(port: int, tag: str = "") -> dict[str, Any]:
    inbound = {"port": port, "listen": "127.0.0.1", "protocol": "socks",
               "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}
    if tag:
        inbound["tag"] = tag
    return inbound


class _Pairing(TestCase):
    """Shared machinery: an echo server; subclasses add the V2Ray and vtwist sides."""

    timeout = 120
    echo: EchoServer
    v2ray: V2Ray | None = None
    #: the method moved 20 MB each way in this pairing
    big: str = "aes-128-gcm"

    def setUp(self) -> None:
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
            cls.startV2Ray()

    @classmethod
    def startV2Ray(cls) -> None:
        """Start the class's V2Ray process (if it needs one)."""

    async def vtwist(self, config: dict[str, Any]) -> Any:
        return await start_service(config, self)

    async def socksPort(self, method: str) -> int:
        """The SOCKS port whose traffic crosses Shadowsocks with ``method``."""
        raise NotImplementedError

    async def check_tcp(self, method: str, host: str, size: int) -> None:
        port = await self.socksPort(method)
        sent, got, _ = await socks_echo(reactor, port, host, self.echo.port, size)
        self.assertEqual(got, sent, f"{method}: data differs")

    async def check_udp(self, method: str, host: str) -> None:
        port = await self.socksPort(method)
        payloads = [b"abc", bytes(range(150)), b"\xa5" * 1400]
        got = await socks_udp_echo(reactor, port, host, self.echo.port, payloads)
        self.assertEqual(got, payloads)


def _matrix(cls: type) -> type:
    """Add test_tcp_<method>, test_udp_<method> and per-target tests to a pairing class."""
    for method in METHODS:
        def tcp(self: _Pairing, method: str = method) -> Any:
            size = BIG if method == self.big else MEDIUM
            return defer.ensureDeferred(self.check_tcp(method, "127.0.0.1", size))

        def udp(self: _Pairing, method: str = method) -> Any:
            return defer.ensureDeferred(self.check_udp(method, "127.0.0.1"))

        tcp.__name__ = f"test_tcp_{_name(method)}"
        udp.__name__ = f"test_udp_echo_{_name(method)}"
        setattr(cls, tcp.__name__, tcp)
        setattr(cls, udp.__name__, udp)

    def domain(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_tcp("chacha20-poly1305", "localhost", SMALL))

    def ipv6(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_tcp("aes-256-gcm", "::1", SMALL))

    def udp_ipv6(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_udp("aes-128-gcm", "::1"))

    for f, name in ((domain, "test_domain_target"), (ipv6, "test_ipv6_target"),
                    (udp_ipv6, "test_udp_echo_ipv6")):
        f.__name__ = name
        setattr(cls, name, f)
    return cls


@_matrix
class VTwistClientToV2RayServer(_Pairing):
    """vtwist SOCKS + Shadowsocks outbound -> V2Ray Shadowsocks inbound -> freedom."""

    big = "aes-128-gcm"

    @classmethod
    def startV2Ray(cls) -> None:
        cls.ss_ports = {m: free_port(udp_too=True) for m in METHODS}
        cls.v2ray = V2Ray({"log": {"loglevel": "warning"},
                           "inbounds": [_ss_inbound(cls.ss_ports[m], v2)
                                        for m, v2 in METHODS.items()],
                           "outbounds": [{"protocol": "freedom"}]},
                          list(cls.ss_ports.values()))

    async def socksPort(self, method: str) -> int:
        port = free_port()
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_socks_inbound(port)],
                           "outbounds": [_ss_outbound(self.ss_ports[method], method)]})
        return port


@_matrix
class V2RayClientToVTwistServer(_Pairing):
    """V2Ray SOCKS + Shadowsocks outbound -> vtwist Shadowsocks inbound -> freedom."""

    big = "chacha20-poly1305"

    async def socksPort(self, method: str) -> int:
        # A server port and a V2Ray client for this test alone (see the VMess suite's)
        server = free_port(udp_too=True)
        service = await self.vtwist({"log": {"loglevel": "warning"},
                                     "inbounds": [_ss_inbound(server, method)],
                                     "outbounds": [{"protocol": "freedom"}]})
        self.server_factory = service.inbound_services[0].factory
        socks = free_port()
        v2ray = V2Ray({"log": {"loglevel": "warning"}, "inbounds": [_socks_inbound(socks)],
                       "outbounds": [_ss_outbound(server, METHODS[method])]}, [socks])
        self.addCleanup(v2ray.stop)
        return socks

    async def check_tcp(self, method: str, host: str, size: int) -> None:
        await super().check_tcp(method, host, size)
        self.assertEqual((self.server_factory.accepted, self.server_factory.refused), (1, 0))


@_matrix
class VTwistToVTwist(_Pairing):
    """vtwist SOCKS + Shadowsocks outbound -> vtwist Shadowsocks inbound -> freedom."""

    big = "aes-256-gcm"

    async def socksPort(self, method: str) -> int:
        ss_port, socks_port = free_port(udp_too=True), free_port()
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_ss_inbound(ss_port, method)],
                           "outbounds": [{"protocol": "freedom"}]})
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_socks_inbound(socks_port)],
                           "outbounds": [_ss_outbound(ss_port, METHODS[method])]})
        return socks_port
