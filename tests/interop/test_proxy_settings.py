"""``proxySettings`` (outbound chaining) against the real V2Ray 4.34.

vtwist: socks in -> vmess ``a`` (proxySettings -> ``b``) -> vmess ``b``. ``b`` carries ``a``'s
whole VMess connection to V2Ray server B, whose freedom opens it to V2Ray server A, which
opens the echo server: B's access log shows A's port, A's shows the echo port. The same
config shape run by V2Ray as the client, through two vtwist servers, gives the same.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.testing.doubles import LogCapture

UA = str(uuid.uuid4())
UB = str(uuid.uuid4())
SIZE = 20 * 1024 * 1024


def server(port: int, user: str, alter: int, tag: str) -> dict[str, Any]:
    """A VMess server: vmess in on ``port`` -> freedom, access log on the console."""
    return {"log": {"loglevel": "info"},
            "inbounds": [{"port": port, "listen": "127.0.0.1", "protocol": "vmess", "tag": tag,
                          "settings": {"clients": [{"id": user, "alterId": alter}]}}],
            "outbounds": [{"protocol": "freedom"}]}


def chain_client(socks: int, port_a: int, port_b: int) -> dict[str, Any]:
    """socks in -> vmess a (through b, AEAD) ; vmess b (legacy header, alterId 4)."""
    return {
        "inbounds": [{"port": socks, "listen": "127.0.0.1", "protocol": "socks",
                      "settings": {"auth": "noauth"}}],
        "outbounds": [
            {"tag": "a", "protocol": "vmess", "proxySettings": {"tag": "b"},
             "settings": {"vnext": [{"address": "127.0.0.1", "port": port_a,
                                     "users": [{"id": UA, "alterId": 0,
                                                "security": "aes-128-gcm"}]}]}},
            {"tag": "b", "protocol": "vmess",
             "settings": {"vnext": [{"address": "127.0.0.1", "port": port_b,
                                     "users": [{"id": UB, "alterId": 4,
                                                "security": "chacha20-poly1305"}]}]}},
        ]}


class ChainTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.port_a, self.port_b, self.socks = free_port(), free_port(), free_port()

    def v2ray(self, config: dict[str, Any], port: int) -> V2Ray:
        v = V2Ray(config, wait_ports=[port])
        self.addCleanup(v.stop)
        return v

    async def test_vtwist_chain_to_v2ray_servers(self) -> None:
        a = self.v2ray(server(self.port_a, UA, 0, "in-a"), self.port_a)
        b = self.v2ray(server(self.port_b, UB, 4, "in-b"), self.port_b)
        await start_service(chain_client(self.socks, self.port_a, self.port_b), self)
        sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", self.echo.port, SIZE)
        self.assertEqual(got, sent)
        await wait_until(lambda: f"tcp:127.0.0.1:{self.port_a}" in b.output(),
                         lambda: f"B never opened A:\n{b.output()}", 10)
        await wait_until(lambda: f"tcp:127.0.0.1:{self.echo.port}" in a.output(),
                         lambda: f"A never opened the echo server:\n{a.output()}", 10)
        self.assertNotIn(f"tcp:127.0.0.1:{self.echo.port}", b.output())

    async def test_v2ray_chain_to_vtwist_servers(self) -> None:
        """The same client config run by V2Ray 4.34, through two vtwist servers."""
        access = LogCapture("vtwist.access")
        self.addCleanup(access.stop)
        await start_service(server(self.port_a, UA, 0, "in-a"), self)
        await start_service(server(self.port_b, UB, 4, "in-b"), self)
        self.v2ray(chain_client(self.socks, self.port_a, self.port_b), self.socks)
        sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", self.echo.port, SIZE)
        self.assertEqual(got, sent)
        lines = [formatEvent(e) for e in access.events]
        self.assertTrue(any(f"accepted tcp:127.0.0.1:{self.port_a} [in-b >> " in line
                            for line in lines), lines)
        self.assertTrue(any(f"accepted tcp:127.0.0.1:{self.echo.port} [in-a >> " in line
                            for line in lines), lines)


SS_PASSWORD = "chained-ss-udp"
UDP_PAYLOADS = [b"abc", bytes(range(200)), b"\x5a" * 1400]


def ss_server(port: int) -> dict[str, Any]:
    """A Shadowsocks server (tcp and udp) on ``port`` -> freedom."""
    return {"log": {"loglevel": "warning"},
            "inbounds": [{"port": port, "listen": "127.0.0.1", "protocol": "shadowsocks",
                          "tag": "in-ss",
                          "settings": {"method": "aes-128-gcm", "password": SS_PASSWORD,
                                       "network": "tcp,udp"}}],
            "outbounds": [{"protocol": "freedom"}]}


def ss_chain_client(socks: int, ss_port: int, upstream: dict[str, Any]) -> dict[str, Any]:
    """socks in (udp) -> shadowsocks ``ss`` (proxySettings -> ``up``) ; ``upstream``."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"port": socks, "listen": "127.0.0.1", "protocol": "socks",
                      "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}],
        "outbounds": [
            {"tag": "ss", "protocol": "shadowsocks", "proxySettings": {"tag": "up"},
             "settings": {"servers": [{"address": "127.0.0.1", "port": ss_port,
                                       "method": "aes-128-gcm", "password": SS_PASSWORD}]}},
            dict(upstream, tag="up"),
        ]}


def vmess_upstream(port: int) -> dict[str, Any]:
    """The vmess outbound to the middle server (``server(port, UB, 0, ...)``)."""
    return {"protocol": "vmess",
            "settings": {"vnext": [{"address": "127.0.0.1", "port": port,
                                    "users": [{"id": UB, "alterId": 0,
                                               "security": "aes-128-gcm"}]}]}}


class _UDPChain(TestCase):
    """An echo server, ports for the server, the middle server and the client's SOCKS."""

    timeout = 120

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.ss_port, self.mid, self.socks = free_port(udp_too=True), free_port(), free_port()

    def v2ray(self, config: dict[str, Any], port: int) -> V2Ray:
        v = V2Ray(config, wait_ports=[port])
        self.addCleanup(v.stop)
        return v

    async def echo_through(self) -> None:
        got = await socks_udp_echo(reactor, self.socks, "127.0.0.1", self.echo.port,
                                   UDP_PAYLOADS)
        self.assertEqual(got, UDP_PAYLOADS)


class ShadowsocksUDPChainTests(_UDPChain):
    """A Shadowsocks outbound's UDP with proxySettings goes through the proxy outbound.

    V2Ray 4.34 (``app/proxyman/outbound/handler.go`` ``Dial``) hands the Shadowsocks
    client's ``udp:server:port`` destination to the proxy handler, so the Shadowsocks
    packets ride the proxy's UDP (VMess UDP, SOCKS UDP ASSOCIATE) to the server's UDP port.
    The middle server's access log must show ``udp:<ss port>``; the echo must come back.
    """

    async def test_vtwist_over_vmess_to_v2ray(self) -> None:
        """vtwist client: ss over vmess -> V2Ray vmess server -> V2Ray ss server (UDP)."""
        mid = self.v2ray(server(self.mid, UB, 0, "in-mid"), self.mid)
        self.v2ray(ss_server(self.ss_port), self.ss_port)
        await start_service(ss_chain_client(self.socks, self.ss_port,
                                            vmess_upstream(self.mid)), self)
        await self.echo_through()
        await wait_until(lambda: f"udp:127.0.0.1:{self.ss_port}" in mid.output(),
                         lambda: f"the Shadowsocks UDP skipped VMess:\n{mid.output()}", 10)

    async def test_v2ray_over_vmess_to_vtwist(self) -> None:
        """The same client config run by V2Ray 4.34, through vtwist vmess and ss servers."""
        access = LogCapture("vtwist.access")
        self.addCleanup(access.stop)
        await start_service(server(self.mid, UB, 0, "in-mid"), self)
        await start_service(ss_server(self.ss_port), self)
        self.v2ray(ss_chain_client(self.socks, self.ss_port, vmess_upstream(self.mid)),
                   self.socks)
        await self.echo_through()
        lines = [formatEvent(e) for e in access.events]
        self.assertTrue(any(f"accepted udp:127.0.0.1:{self.ss_port} [in-mid >> " in line
                            for line in lines), lines)

    async def test_vtwist_over_socks_to_v2ray(self) -> None:
        """vtwist client: ss over a SOCKS outbound (UDP ASSOCIATE) -> V2Ray socks server."""
        mid = self.v2ray({"log": {"loglevel": "info"},
                          "inbounds": [{"port": self.mid, "listen": "127.0.0.1",
                                        "protocol": "socks", "tag": "in-mid",
                                        "settings": {"auth": "noauth", "udp": True,
                                                     "ip": "127.0.0.1"}}],
                          "outbounds": [{"protocol": "freedom"}]}, self.mid)
        await start_service(ss_server(self.ss_port), self)
        upstream = {"protocol": "socks",
                    "settings": {"servers": [{"address": "127.0.0.1", "port": self.mid}]}}
        await start_service(ss_chain_client(self.socks, self.ss_port, upstream), self)
        await self.echo_through()
        await wait_until(lambda: f"udp:127.0.0.1:{self.ss_port}" in mid.output(),
                         lambda: f"the Shadowsocks UDP skipped SOCKS:\n{mid.output()}", 10)


def socks_server(port: int, level: str = "warning") -> dict[str, Any]:
    """A SOCKS5 server with UDP on ``port`` -> freedom."""
    return {"log": {"loglevel": level},
            "inbounds": [{"port": port, "listen": "127.0.0.1", "protocol": "socks",
                          "tag": "in-socks", "settings": {"auth": "noauth", "udp": True,
                                                          "ip": "127.0.0.1"}}],
            "outbounds": [{"protocol": "freedom"}]}


def socks_chain_client(socks: int, server_port: int, mid: int) -> dict[str, Any]:
    """socks in (udp) -> socks outbound ``s`` (proxySettings -> vmess ``up``)."""
    config = ss_chain_client(socks, 0, vmess_upstream(mid))
    config["outbounds"][0] = {
        "tag": "s", "protocol": "socks", "proxySettings": {"tag": "up"},
        "settings": {"servers": [{"address": "127.0.0.1", "port": server_port}]}}
    return config


class SocksUDPChainTests(_UDPChain):
    """The same for a SOCKS outbound's UDP: the control connection and the datagrams to
    the relay both go through the proxy outbound (V2Ray 4.34's socks client dials the
    relay's ``udp:`` destination through ``Dial``)."""

    async def test_vtwist_over_vmess_to_v2ray(self) -> None:
        """vtwist client: socks over vmess -> V2Ray vmess server -> V2Ray socks server."""
        mid = self.v2ray(server(self.mid, UB, 0, "in-mid"), self.mid)
        self.v2ray(socks_server(self.ss_port), self.ss_port)
        await start_service(socks_chain_client(self.socks, self.ss_port, self.mid), self)
        await self.echo_through()
        await wait_until(lambda: f"udp:127.0.0.1:{self.ss_port}" in mid.output(),
                         lambda: f"the SOCKS UDP skipped VMess:\n{mid.output()}", 10)

    async def test_v2ray_over_vmess_to_vtwist(self) -> None:
        """The same client config run by V2Ray 4.34, through vtwist vmess and socks."""
        access = LogCapture("vtwist.access")
        self.addCleanup(access.stop)
        await start_service(server(self.mid, UB, 0, "in-mid"), self)
        await start_service(socks_server(self.ss_port), self)
        self.v2ray(socks_chain_client(self.socks, self.ss_port, self.mid), self.socks)
        await self.echo_through()
        # vtwist's SOCKS relay has a port of its own: the middle server opened a udp
        # destination, the SOCKS server's TCP port only as the control connection
        lines = [formatEvent(e) for e in access.events]
        self.assertTrue(any("accepted udp:127.0.0.1:" in line and "[in-mid >> " in line
                            for line in lines), lines)
        self.assertTrue(any(f"accepted tcp:127.0.0.1:{self.ss_port} [in-mid >> " in line
                            for line in lines), lines)


def freedom_chain_client(socks: int, mid: int, echo: int) -> dict[str, Any]:
    """socks in (udp) -> freedom (redirect to the echo port; proxySettings -> vmess)."""
    config = ss_chain_client(socks, 0, vmess_upstream(mid))
    config["outbounds"][0] = {
        "tag": "direct", "protocol": "freedom", "proxySettings": {"tag": "up"},
        "settings": {"redirect": f"127.0.0.1:{echo}"}}
    return config


class FreedomChainTests(_UDPChain):
    """A freedom outbound with proxySettings goes out through the proxy outbound (4.34's
    freedom dials through its handler's ``Dial``): streams and datagrams, after its
    ``redirect``. The client asks for a closed port; the redirect names the echo's."""

    async def echo_both(self) -> None:
        closed = free_port(udp_too=True)
        sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", closed, 1 << 20)
        self.assertEqual(got, sent)
        got_udp = await socks_udp_echo(reactor, self.socks, "127.0.0.1", closed,
                                       UDP_PAYLOADS)
        self.assertEqual(got_udp, UDP_PAYLOADS)

    async def test_vtwist_over_vmess_to_v2ray(self) -> None:
        mid = self.v2ray(server(self.mid, UB, 0, "in-mid"), self.mid)
        await start_service(freedom_chain_client(self.socks, self.mid, self.echo.port), self)
        await self.echo_both()
        for network in ("tcp", "udp"):
            await wait_until(lambda n=network: f"{n}:127.0.0.1:{self.echo.port}" in mid.output(),
                             lambda: f"freedom skipped VMess:\n{mid.output()}", 10)

    async def test_v2ray_over_vmess_to_vtwist(self) -> None:
        """The same client config run by V2Ray 4.34 (the reference), through vtwist."""
        access = LogCapture("vtwist.access")
        self.addCleanup(access.stop)
        await start_service(server(self.mid, UB, 0, "in-mid"), self)
        self.v2ray(freedom_chain_client(self.socks, self.mid, self.echo.port), self.socks)
        await self.echo_both()
        lines = [formatEvent(e) for e in access.events]
        for network in ("tcp", "udp"):
            self.assertTrue(any(f"accepted {network}:127.0.0.1:{self.echo.port} [in-mid >> "
                                in line for line in lines), lines)
