"""VMess ``detour`` to an ``allocate: random`` inbound, against the real V2Ray 4.34.

* V2Ray client -> vtwist server with a detour: the response's SwitchAccount sends V2Ray's
  client to a dynamic port with a made-up account, and later connections arrive there
  (vtwist's access log names the dynamic inbound), data intact.
* vtwist client -> V2Ray server with a detour: vtwist's client parses V2Ray's command, logs
  the port (one of the dynamic range) and account, and takes that server in turn: later
  connections go to the dynamic port, data intact.
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

USER = str(uuid.uuid4())


def detour_server(port: int, dyn_from: int) -> dict[str, Any]:
    """The dynamic-port example's shape: vmess on ``port`` with detour to "dynamicPort",
    a vmess inbound on 10 ports with allocate random."""
    return {
        "log": {"loglevel": "debug"},
        "inbounds": [
            {"port": port, "listen": "127.0.0.1", "protocol": "vmess", "tag": "main",
             "settings": {"clients": [{"id": USER, "alterId": 0, "email": "u@test"}],
                          "detour": {"to": "dynamicPort"}}},
            {"port": f"{dyn_from}-{dyn_from + 9}", "listen": "127.0.0.1", "protocol": "vmess",
             "tag": "dynamicPort", "settings": {"default": {"alterId": 4, "level": 0}},
             "allocate": {"strategy": "random", "concurrency": 2, "refresh": 5}},
        ],
        "outbounds": [{"protocol": "freedom"}]}


def client(socks: int, port: int) -> dict[str, Any]:
    return {"log": {"loglevel": "debug"},
            "inbounds": [{"port": socks, "listen": "127.0.0.1", "protocol": "socks",
                          "settings": {"auth": "noauth"}}],
            "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": port,
                "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}}]}


def _dyn_range() -> int:
    """A start port with 10 free ports after it (best effort)."""
    return free_port()


class DetourTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.port, self.socks, self.dyn = free_port(), free_port(), _dyn_range()
        self.logs = LogCapture("vtwist")
        self.addCleanup(self.logs.stop)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logs.events]

    async def test_v2ray_client_follows_vtwist_detour(self) -> None:
        await start_service(detour_server(self.port, self.dyn), self)
        v = V2Ray(client(self.socks, self.port), wait_ports=[self.socks])
        self.addCleanup(v.stop)
        for _ in range(6):  # V2Ray's client takes the offered server in turn with its own
            sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", self.echo.port,
                                            256 * 1024)
            self.assertEqual(got, sent)
        dyn = [line for line in self.lines() if " [dynamicPort >> " in line]
        main = [line for line in self.lines() if " [main >> " in line]
        self.assertTrue(main, self.lines())
        self.assertTrue(dyn, f"no connection reached the dynamic port:\n{v.output()}")
        self.assertIn("email: u@test", dyn[0])

    async def test_vtwist_client_parses_v2ray_detour(self) -> None:
        v = V2Ray(detour_server(self.port, self.dyn), wait_ports=[self.port])
        self.addCleanup(v.stop)
        await start_service(client(self.socks, self.port), self)
        sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", self.echo.port,
                                        64 * 1024)
        self.assertEqual(got, sent)
        await wait_until(lambda: any("SwitchAccount" in line for line in self.lines()),
                         lambda: "no SwitchAccount logged:\n" + "\n".join(self.lines()), 10)
        (line,) = [line for line in self.lines() if "SwitchAccount" in line][:1]
        port = int(line.split("(same server):")[1].split()[0])
        self.assertIn(port, range(self.dyn, self.dyn + 10))
        self.assertIn("alterId 4", line)
        self.assertIn("taken in turn", line)
        for _ in range(4):  # the configured server and the offer, in turn
            sent, got, _ = await socks_echo(reactor, self.socks, "127.0.0.1", self.echo.port,
                                            64 * 1024)
            self.assertEqual(got, sent)
        taken = [line for line in self.lines() if "vmess: taking 127.0.0.1:" in line]
        self.assertTrue(taken, "\n".join(self.lines()))
        # V2Ray's dynamic inbound (legacy header, alterId 4) carried some of them.
        self.assertIn(f":{port}", taken[0])
