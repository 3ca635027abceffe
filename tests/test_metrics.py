"""Prometheus /metrics from a running service, scraped over HTTP: mKCP sessions (a VMess
over mKCP loop inside one service), failed connections by reason, bounded labels."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.testing.doubles import Collector, Echo

USER = str(uuid.uuid4())


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics: {(sample name, sorted labels): value}."""
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    assert response.code == 200, response.code
    body = (await readBody(response)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


class MetricsTests(TestCase):
    """One service: door (dokodemo) -> vmess over mKCP -> its own vmess inbound -> echo."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo))
        self.addCleanup(self.echo.stopListening)
        self.door, self.refused, self.kcp, self.metrics = (free_port(), free_port(),
                                                           free_port(udp_too=True), free_port())
        kcp = {"network": "kcp", "kcpSettings": {"header": {"type": "wechat-video"}}}
        self.service = await start_service({
            "metrics": {"port": self.metrics},
            "inbounds": [
                {"tag": "door", "port": self.door, "listen": "127.0.0.1",
                 "protocol": "dokodemo-door",
                 "settings": {"address": "127.0.0.1", "port": self.echo.getHost().port}},
                {"tag": "nowhere", "port": self.refused, "listen": "127.0.0.1",
                 "protocol": "dokodemo-door",
                 "settings": {"address": "127.0.0.1", "port": free_port()}},
                {"tag": "vmess-kcp", "port": self.kcp, "listen": "127.0.0.1",
                 "protocol": "vmess", "streamSettings": kcp,
                 "settings": {"clients": [{"id": USER, "email": "k@test"}]}}],
            "outbounds": [
                {"tag": "direct", "protocol": "freedom"},
                {"tag": "over-kcp", "protocol": "vmess", "streamSettings": kcp,
                 "settings": {"vnext": [{"address": "127.0.0.1", "port": self.kcp,
                                         "users": [{"id": USER}]}]}}],
            "routing": {"rules": [
                {"type": "field", "inboundTag": ["door"], "outboundTag": "over-kcp"}]}}, self)

    async def test_kcp_and_traffic(self) -> None:
        client = Collector()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", self.door).connect(
            Factory.forProtocol(lambda: client))
        client.transport.write(b"k" * 200_000)
        await client.wait(200_000)
        live = await scrape(self.metrics)

        def value(samples: Any, metric: str, **labels: str) -> float:
            return samples[(metric, tuple(sorted(labels.items())))]

        for role in ("server", "client"):
            labels = {"role": role, "header": "wechat-video"}
            self.assertEqual(value(live, "vtwist_kcp_sessions", **labels), 1)
            self.assertGreater(value(live, "vtwist_kcp_segments_sent_total", **labels), 100)
            self.assertGreaterEqual(value(live, "vtwist_kcp_loss_ratio", **labels), 0)
            self.assertGreaterEqual(value(live, "vtwist_kcp_srtt_seconds", **labels), 0)  # loopback: ~0 ms
        # the door's stream and the vmess inbound's stream behind it
        self.assertEqual(value(live, "vtwist_connections_active"), 2)
        for kind, name in (("inbound", "door"), ("outbound", "over-kcp"), ("user", "k@test"),
                           ("inbound", "vmess-kcp"), ("outbound", "direct")):
            self.assertEqual(value(live, "vtwist_traffic_bytes_total", kind=kind, name=name,
                                   direction="downlink"), 200_000)
        self.assertEqual(value(live, "vtwist_handshake_seconds_count", protocol="vmess"), 1)
        client.transport.loseConnection()
        stats = self.service.tunnels.stats
        await wait_until(lambda: stats.active == 0, "connections still open")

    async def test_failed_by_reason(self) -> None:
        """A refused outbound connection is counted under ``refused``."""
        client = Collector()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", self.refused).connect(
            Factory.forProtocol(lambda: client))
        await client.lost
        stats = self.service.tunnels.stats
        await wait_until(lambda: stats.failed.get("refused"), "not counted")
        samples = await scrape(self.metrics)
        self.assertEqual(samples[("vtwist_connections_failed_total", (("reason", "refused"),))],
                         1)
        self.assertEqual(samples[("vtwist_connections_total", ())], 0)




class HandshakeLatencyTests(TestCase):
    """The socks and http inbounds feed ``vtwist_handshake_seconds`` (connection to a valid
    request; the http inbound once per connection, not per keep-alive request)."""

    timeout = 60

    async def test_socks_and_http(self) -> None:
        import os

        from twisted.internet.utils import getProcessOutputAndValue

        from tests.services import serve_web

        web = serve_web(self, {b"page": b"hello"})
        socks, http, metrics = free_port(), free_port(), free_port()
        service = await start_service({
            "metrics": {"port": metrics},
            "inbounds": [
                {"tag": "socks-in", "port": socks, "listen": "127.0.0.1", "protocol": "socks"},
                {"tag": "http-in", "port": http, "listen": "127.0.0.1", "protocol": "http"}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]}, self)
        url = f"http://127.0.0.1:{web}/page"
        for proxy in (f"socks5h://127.0.0.1:{socks}", f"http://127.0.0.1:{http}"):
            # curl keeps one connection for both requests: one handshake each (the http
            # inbound's second request is a keep-alive one, not a handshake)
            out, err, code = await getProcessOutputAndValue(
                "curl", ["-sS", "--max-time", "10", "-x", proxy, url, url],
                env=dict(os.environ))
            self.assertEqual((out, code), (b"hellohello", 0), err)
        stats = service.tunnels.stats
        await wait_until(lambda: stats.active == 0, "connections still open")
        samples = await scrape(metrics)
        counts = {protocol: samples[("vtwist_handshake_seconds_count",
                                     (("protocol", protocol),))]
                  for protocol in ("socks", "http")}
        self.assertEqual(counts, {"socks": 1, "http": 1})
        total = samples[("vtwist_handshake_seconds_sum", (("protocol", "socks"),))]
        self.assertGreater(total, 0)
        self.assertLess(total, 10)
