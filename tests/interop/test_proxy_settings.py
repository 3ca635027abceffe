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
from tests.interop.vmess_harness import socks_echo
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
