"""Hot reload of the sections beside inbounds, outbounds and routing: a changed ``dns``
section answers at once (and its resolver replaces the old one everywhere), the stats switches
and the API's set of inbounds apply, and what needs a restart (``stats``, ``api``,
``metrics``, ``reverse`` bridges) says so in one warning line each."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from tests import test_reload as helpers
from tests.netutil import free_port
from tests.test_reload import Probe, config, socks


class SectionReloadTests(TestCase):
    timeout = 60

    start = helpers.ReloadTests.start
    reload = helpers.ReloadTests.reload
    via_socks = helpers.ReloadTests.via_socks
    echoes = helpers.ReloadTests.echoes
    setUp = helpers.ReloadTests.setUp

    def warnings(self) -> list[str]:
        return [line for line in self.logs.lines(LogLevel.warn) if "reload" in line]

    async def test_dns_change_answers_at_once(self) -> None:
        """``dns.hosts`` names the echo server's address only after the reload: a freedom
        outbound (UseIPv4: the dns section resolves) reaches it then; the old resolver is
        replaced in the service, the routing and the build context."""
        p = free_port()

        def with_hosts(ip: str) -> dict[str, Any]:
            return config(socks(p), dns={"hosts": {"svc.test": ip}}, outbounds=[
                {"tag": "direct", "protocol": "freedom",
                 "settings": {"domainStrategy": "UseIPv4"}}])

        service = await self.start(with_hosts("127.0.0.2"))  # nothing listens there
        old = service.resolver

        self.assertEqual(await self.svc_echo(p), b"")
        await self.reload(service, with_hosts("127.0.0.1"))
        self.assertIsNot(service.resolver, old)
        self.assertIs(service.ctx.resolver, service.resolver)
        self.assertEqual(await self.svc_echo(p), b"ping")

    async def svc_echo(self, port: int) -> bytes:
        """ping through the socks inbound to svc.test:echo (b"" when it cannot connect)."""
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from vtwist.address import Destination
        from vtwist.proxy.socks.client import SocksClientEndpoint

        probe = Probe()
        endpoint = SocksClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                       Destination.tcp("svc.test", self.echo))
        try:
            await endpoint.connect(Factory.forProtocol(lambda: probe))
        except Exception:  # noqa: BLE001 - the socks server refused: no route there
            return b""
        return await probe.done

    async def test_stats_switches_and_restart_lines(self) -> None:
        """policy.system's switches apply to the next connections; a changed stats, api,
        metrics section or reverse bridge is one warning line each, and nothing else
        changes for it."""
        p = free_port()
        base = {"stats": {}, "policy": {"system": {"statsInboundUplink": False}}}
        service = await self.start(config(socks(p), **base))
        stats = service.tunnels.stats
        self.assertNotIn("inbound>>>socks>>>traffic>>>uplink", stats.counters)
        on = {"stats": {}, "policy": {"system": {"statsInboundUplink": True}}}
        await self.reload(service, config(socks(p), **on))
        self.assertEqual(self.warnings(), [])
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(p, pr)), b"ping")
        self.assertEqual(stats.get("inbound>>>socks>>>traffic>>>uplink"), 4)
        # sections a reload cannot apply
        changed = config(socks(p), metrics={"port": free_port()},
                         reverse={"bridges": [{"tag": "bridge", "domain": "r.test"}]},
                         outbounds=[{"tag": "direct", "protocol": "freedom"}],
                         policy=on["policy"])
        result = await self.reload(service, changed)
        self.assertIsNotNone(result)
        self.assertEqual(self.warnings(), [
            f"reload: {what} changed: it takes effect at the next restart (the running one "
            "stays)" for what in ("the stats section", "the metrics section",
                                  "reverse.bridges")])
        self.assertIs(service.tunnels.stats, stats)

    async def test_api_inbounds_follow_routing(self) -> None:
        """An inbound routing sends to the API after a reload serves the gRPC API (and the
        one it no longer sends serves its protocol again), on the same socket."""
        from vtwist.app.api.server import GrpcServerFactory

        a, b = free_port(), free_port()

        def routed(*tags: str) -> dict[str, Any]:
            return config(
                {"tag": "door-a", "protocol": "dokodemo-door", "port": a,
                 "listen": "127.0.0.1", "settings": {"address": "127.0.0.1",
                                                     "port": self.echo}},
                {"tag": "door-b", "protocol": "dokodemo-door", "port": b,
                 "listen": "127.0.0.1", "settings": {"address": "127.0.0.1",
                                                     "port": self.echo}},
                api={"tag": "api", "services": ["StatsService"]}, stats={},
                routing={"rules": [{"type": "field", "inboundTag": list(tags),
                                    "outboundTag": "api"}]})

        service = await self.start(routed("door-a"))
        kinds = [isinstance(g[0].factory, GrpcServerFactory) for g in service.inbound_groups]
        self.assertEqual(kinds, [True, False])
        ports = [g[0].port for g in service.inbound_groups]
        await self.reload(service, routed("door-b"))
        kinds = [isinstance(g[0].factory, GrpcServerFactory) for g in service.inbound_groups]
        self.assertEqual(kinds, [False, True])
        self.assertEqual([g[0].port for g in service.inbound_groups], ports)
        self.assertEqual(await self.echoes(lambda pr: self._door(a, pr)), b"ping")
        # the api section itself changed: a warning, and the API inbounds stay
        changed = routed("door-b")
        changed["api"]["services"] = ["StatsService", "LoggerService"]
        await self.reload(service, changed)
        self.assertEqual(self.warnings(), [
            "reload: the api section changed: it takes effect at the next restart (the "
            "running one stays)"])
        kinds = [isinstance(g[0].factory, GrpcServerFactory) for g in service.inbound_groups]
        self.assertEqual(kinds, [False, True])

    def _door(self, port: int, proto: Any) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint

        return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: proto))
