"""The reverse proxy (``reverse`` bridges and portals) end to end, against V2Ray 4.34.

``browser -> portal's dokodemo-door -> portal == VMess (dialled by the bridge) == bridge ->
freedom -> web server``: a web server that only the bridge can reach is fetched through the
portal. Pairings: vtwist bridge -> V2Ray portal, V2Ray bridge -> vtwist portal, vtwist ->
vtwist. Each fetches a small page and a 2 MB one (sha256), several at once, over the one
connection the bridge opened; then the portal drains that connection (after 256 sessions
with a V2Ray portal, after 3 with a vtwist one, the limit patched) and the bridge opens a
fresh one, which the next fetches use.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_udp_echo
from tests.netutil import free_port, reactor_connections, wait_until
from tests.services import serve_web, start_service
from vtwist.app.reverse import portal as portal_module
from vtwist.app.reverse.bridge import Bridge

USER = str(uuid.uuid4())
DOMAIN = "private.reverse.test"
SMALL = b"hello from behind the bridge\n"
BIG = os.urandom(2 * 1024 * 1024)


def portal_config(external: int, tunnel: int, web: int, socks: int = 0) -> dict[str, Any]:
    """The public side: dokodemo-door to the web server's address (and, with ``socks``, a
    SOCKS5 inbound with UDP), VMess for the bridge."""
    config: dict[str, Any] = {
        "log": {"loglevel": "warning"},
        "reverse": {"portals": [{"tag": "portal", "domain": DOMAIN}]},
        "inbounds": [
            {"tag": "external", "listen": "127.0.0.1", "port": external,
             "protocol": "dokodemo-door",
             "settings": {"address": "127.0.0.1", "port": web, "network": "tcp"}},
            {"tag": "tunnel", "listen": "127.0.0.1", "port": tunnel, "protocol": "vmess",
             "settings": {"clients": [{"id": USER, "alterId": 0}]}}],
        "outbounds": [{"tag": "block", "protocol": "blackhole"}],
        "routing": {"rules": [
            {"type": "field", "inboundTag": ["external", "external-socks"],
             "outboundTag": "portal"},
            {"type": "field", "inboundTag": ["tunnel"], "domain": [f"full:{DOMAIN}"],
             "outboundTag": "portal"}]},
    }
    if socks:
        config["inbounds"].append({"tag": "external-socks", "listen": "127.0.0.1",
                                   "port": socks,
                                   "protocol": "socks",
                                   "settings": {"auth": "noauth", "udp": True,
                                                "ip": "127.0.0.1"}})
    return config


def bridge_config(tunnel: int) -> dict[str, Any]:
    """The private side: no inbound; the bridge dials the portal through VMess."""
    return {
        "log": {"loglevel": "warning"},
        "reverse": {"bridges": [{"tag": "bridge", "domain": DOMAIN}]},
        "outbounds": [
            {"tag": "tunnel", "protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": tunnel,
                "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}},
            {"tag": "direct", "protocol": "freedom"}],
        "routing": {"rules": [
            {"type": "field", "inboundTag": ["bridge"], "domain": [f"full:{DOMAIN}"],
             "outboundTag": "tunnel"},
            {"type": "field", "inboundTag": ["bridge"], "outboundTag": "direct"}]},
    }


class _Reverse:
    """The fetches every pairing runs (a mixin with TestCase)."""

    timeout = 120
    pairing: tuple[str, str]

    async def setUpPair(self, bridge: str, portal: str) -> int:
        """Start both sides; the port a browser fetches from (``self.socks``: a SOCKS5
        port on the portal)."""
        self.web = serve_web(self, {b"small": SMALL, b"big": BIG})
        external, tunnel = free_port(), free_port()
        self.socks = free_port(udp_too=True)

        async def carriersClosed() -> None:
            await wait_until(lambda: not connections_to(tunnel), "bridge connections open", 30)
        self.addCleanup(lambda: defer.ensureDeferred(carriersClosed()))
        self.portalConfig = portal_config(external, tunnel, self.web, self.socks)
        self.ports = [external, tunnel]
        if portal == "vtwist":
            self.portal = await start_service(self.portalConfig, self)
        else:
            self.portalProc = V2Ray(self.portalConfig, self.ports)
            self.addCleanup(lambda: self.portalProc.stop())
        if bridge == "vtwist":
            self.bridge = await start_service(bridge_config(tunnel), self)
        else:
            proc = V2Ray(bridge_config(tunnel))
            self.addCleanup(proc.stop)
        return external

    async def fetch(self, port: int, path: str) -> bytes:
        """GET through the portal; retried while the bridge is still connecting."""
        agent = Agent(reactor)
        url = f"http://127.0.0.1:{port}/{path}".encode()
        last: Any = None
        for _ in range(40):
            try:
                response = await agent.request(b"GET", url).addTimeout(20, reactor)
                body = await readBody(response)
                if response.code == 200:
                    return body
                last = response.code
            except Exception as e:  # noqa: BLE001 - the bridge is not connected yet
                last = e
            await defer.ensureDeferred(_sleep(0.25))
        raise AssertionError(f"no page through the portal: {last!r}")

    def bridgeService(self) -> Bridge:
        [bridge] = [s for s in self.bridge if isinstance(s, Bridge)]
        return bridge

    async def drain(self, port: int, fetches: int) -> None:
        """``fetches`` sessions, then the next check of the bridge opens a connection."""
        for _ in range(fetches):
            self.assertEqual(await self.fetch(port, "small"), SMALL)
        await wait_until(self.drained, "no second bridge connection", 20)
        for _ in range(3):  # on the fresh connection (a portal picks a draining one last)
            self.assertEqual(await self.fetch(port, "small"), SMALL)

    def drained(self) -> bool:
        raise NotImplementedError

    async def restartPortal(self) -> None:
        """Stop the portal and start it again on the same ports."""
        raise NotImplementedError

    async def reconnect(self, port: int) -> None:
        """The portal goes away and comes back: the bridge's next check dials again."""
        self.assertEqual(await self.fetch(port, "small"), SMALL)
        await self.restartPortal()
        self.assertEqual(await self.fetch(port, "small"), SMALL)
        self.assertEqual(self.bridgeService().opened, 2)

    async def test_udp(self) -> None:
        """UDP ASSOCIATE on the portal: datagrams go as mux UDP sessions to the bridge,
        which sends them on (to a UDP echo only it would need to reach)."""
        bridge, portal = self.pairing
        port = await self.setUpPair(bridge, portal)
        self.assertEqual(await self.fetch(port, "small"), SMALL)  # the bridge is connected
        echo = EchoServer()
        self.addCleanup(echo.stop)
        payloads = [b"ping", bytes(range(256)) * 4]
        got = await socks_udp_echo(reactor, self.socks, "127.0.0.1", echo.port, payloads)
        self.assertEqual(got, payloads)

    async def check(self, port: int) -> None:
        self.assertEqual(await self.fetch(port, "small"), SMALL)
        bodies = await defer.gatherResults(
            [defer.ensureDeferred(self.fetch(port, "big")) for _ in range(4)])
        want = hashlib.sha256(BIG).hexdigest()
        self.assertEqual([hashlib.sha256(b).hexdigest() for b in bodies], [want] * 4)


def connections_to(port: int) -> list[Any]:
    """This process's connections from or to ``port``: the bridge's, at either end."""
    return reactor_connections(
        lambda host, peer: port in (getattr(host, "port", None), getattr(peer, "port", None)))


async def _sleep(seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds, lambda: None)


class VTwistBridgeV2RayPortal(_Reverse, TestCase):
    pairing = ("vtwist", "v2ray")

    async def test_fetch_through_portal(self) -> None:
        port = await self.setUpPair("vtwist", "v2ray")
        await self.check(port)
        self.assertEqual(self.bridgeService().opened, 1)

    def drained(self) -> bool:
        return self.bridgeService().opened == 2

    async def restartPortal(self) -> None:
        self.portalProc.stop()
        await wait_until(lambda: not connections_to(self.ports[1]), "bridge connection", 20)
        self.portalProc = V2Ray(self.portalConfig, self.ports)

    async def test_portal_restart(self) -> None:
        """V2Ray's portal is killed and started again; the vtwist bridge reconnects."""
        await self.reconnect(await self.setUpPair("vtwist", "v2ray"))

    async def test_drain(self) -> None:
        """V2Ray's portal sends DRAIN after 256 sessions; the vtwist bridge dials again."""
        port = await self.setUpPair("vtwist", "v2ray")
        await self.drain(port, 260)


class V2RayBridgeVTwistPortal(_Reverse, TestCase):
    pairing = ("v2ray", "vtwist")

    async def test_fetch_through_portal(self) -> None:
        port = await self.setUpPair("v2ray", "vtwist")
        await self.check(port)
        portal = self.portal.dispatcher.by_tag["portal"]
        self.assertEqual(len(portal.workers), 1)

    def drained(self) -> bool:
        workers = self.portal.dispatcher.by_tag["portal"].workers
        return len(workers) == 2 and workers[0].draining and not workers[1].draining

    async def test_drain(self) -> None:
        """The vtwist portal drains (limit patched to 3); V2Ray's bridge dials again."""
        self.patch(portal_module, "DRAIN_AFTER", 3)
        port = await self.setUpPair("v2ray", "vtwist")
        await self.drain(port, 4)


class VTwistBridgeVTwistPortal(_Reverse, TestCase):
    pairing = ("vtwist", "vtwist")

    async def test_fetch_through_portal(self) -> None:
        port = await self.setUpPair("vtwist", "vtwist")
        await self.check(port)
        portal = self.portal.dispatcher.by_tag["portal"]
        self.assertEqual(len(portal.workers), 1)

    def drained(self) -> bool:
        workers = self.portal.dispatcher.by_tag["portal"].workers
        return self.bridgeService().opened == 2 and len(workers) == 2

    async def restartPortal(self) -> None:
        await self.portal.stopService()
        await wait_until(lambda: not connections_to(self.ports[1]), "bridge connection", 20)
        self.portal = await start_service(self.portalConfig, self)

    async def test_portal_restart(self) -> None:
        await self.reconnect(await self.setUpPair("vtwist", "vtwist"))

    async def test_reload_keeps_the_portal(self) -> None:
        """A hot reload of the portal keeps the portal outbound and its bridge connection."""
        from vtwist.app.reload import Reloader

        port = await self.setUpPair("vtwist", "vtwist")
        self.assertEqual(await self.fetch(port, "small"), SMALL)
        portal = self.portal.dispatcher.by_tag["portal"]
        changed = dict(self.portalConfig, outbounds=[
            *self.portalConfig["outbounds"], {"tag": "direct", "protocol": "freedom"}])
        result = await Reloader(self.portal, lambda: changed).reload()
        self.assertIsNotNone(result)
        self.assertIs(self.portal.dispatcher.by_tag["portal"], portal)
        self.assertEqual(await self.fetch(port, "small"), SMALL)
        self.assertEqual(self.bridgeService().opened, 1)

    async def test_drain(self) -> None:
        self.patch(portal_module, "DRAIN_AFTER", 3)
        port = await self.setUpPair("vtwist", "vtwist")
        await self.drain(port, 4)
        workers = self.portal.dispatcher.by_tag["portal"].workers
        self.assertEqual([w.carrier.opened for w in workers], [5, 4])  # +1: control
