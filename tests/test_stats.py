"""Traffic counters (V2Ray's names and switches), their config, failure reasons, the close
line's units, and the tunnel service feeding them from a real relay."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.policy import SystemPolicy
from vtwist.testing.doubles import Collector, Echo, LogCapture
from vtwist.tunnel.access import human_bytes
from vtwist.tunnel.stats import StatsManager, refusal_reason

ALL = SystemPolicy(True, True, True, True)


class StatsManagerTests(SynchronousTestCase):
    """Counting happens in the relay's own list; the counters catch up when read."""

    def test_flow_settles_on_read(self) -> None:
        stats = StatsManager(ALL)
        stats.register_handler("inbound", "in")
        stats.register_handler("outbound", "out")
        counts = [0, 0]
        flow = stats.track(counts, *stats.counters_for("in", "out", "a@b", True, True))
        counts[0] += 100  # what Relay.received does
        counts[1] += 7
        self.assertEqual(stats.get("inbound>>>in>>>traffic>>>uplink"), 100)
        self.assertEqual(stats.get("user>>>a@b>>>traffic>>>downlink"), 7)
        counts[0] += 1
        stats.untrack(flow)
        counts[0] += 1000  # after the flow ended: not counted
        self.assertEqual(stats.query(""), [
            ("inbound>>>in>>>traffic>>>downlink", 7), ("inbound>>>in>>>traffic>>>uplink", 101),
            ("outbound>>>out>>>traffic>>>downlink", 7),
            ("outbound>>>out>>>traffic>>>uplink", 101),
            ("user>>>a@b>>>traffic>>>downlink", 7), ("user>>>a@b>>>traffic>>>uplink", 101)])
        self.assertEqual(stats.flows, set())

    def test_reset_with_live_flow(self) -> None:
        """A reset zeroes what was read; bytes after it count from zero."""
        stats = StatsManager(ALL)
        counts = [0, 0]
        stats.track(counts, *stats.counters_for("in", "out", None))
        counts[0] += 50
        self.assertEqual(stats.query("uplink", reset=True),
                         [("inbound>>>in>>>traffic>>>uplink", 50),
                          ("outbound>>>out>>>traffic>>>uplink", 50)])
        counts[0] += 5
        self.assertEqual(stats.get("inbound>>>in>>>traffic>>>uplink", reset=True), 5)
        self.assertEqual(stats.get("inbound>>>in>>>traffic>>>uplink"), 0)
        self.assertIsNone(stats.get("nope"))

    def test_switches(self) -> None:
        """Only the switched-on directions exist; users only with their level's switches;
        untagged handlers have none."""
        stats = StatsManager(SystemPolicy(stats_inbound_uplink=True,
                                          stats_outbound_downlink=True))
        for kind, tag in (("inbound", "in"), ("outbound", "out"), ("inbound", "")):
            stats.register_handler(kind, tag)
        self.assertEqual(sorted(stats.counters), ["inbound>>>in>>>traffic>>>uplink",
                                                  "outbound>>>out>>>traffic>>>downlink"])
        up, down = stats.counters_for("in", "out", "a@b", user_uplink=True)
        self.assertEqual([c.name for c in up], ["inbound>>>in>>>traffic>>>uplink",
                                                "user>>>a@b>>>traffic>>>uplink"])
        self.assertEqual([c.name for c in down], ["outbound>>>out>>>traffic>>>downlink"])

    def test_metrics_totals_are_hidden(self) -> None:
        """With metrics only, flows feed hidden totals; queries see no counter."""
        stats = StatsManager(ALL, counters=False, metrics=True)
        stats.register_handler("inbound", "in")
        counts = [3, 4]
        flow = stats.track(counts, *stats.counters_for("in", "out", "a@b", True, True))
        counts[0] += 10
        stats.untrack(flow)
        self.assertEqual(stats.query(""), [])
        self.assertEqual({k: c.value for k, c in stats.totals.items()}, {
            ("inbound", "in", 0): 10, ("inbound", "in", 1): 0, ("outbound", "out", 0): 10,
            ("outbound", "out", 1): 0, ("user", "a@b", 0): 10, ("user", "a@b", 1): 0})

    def test_connections_and_handshakes(self) -> None:
        stats = StatsManager()
        stats.connection_opened()
        stats.connection_opened()
        stats.connection_closed()
        stats.connection_failed("timeout")
        stats.connection_failed("timeout")
        stats.handshake("vmess", 0.003)
        stats.handshake("vmess", 0.2)
        stats.handshake("vmess", 60)
        self.assertEqual((stats.active, stats.opened, stats.failed), (1, 2, {"timeout": 2}))
        histogram = stats.handshakes["vmess"]
        self.assertEqual((histogram.count, histogram.counts[0], histogram.counts[5],
                          sum(histogram.counts)), (3, 1, 1, 2))

    def test_refusal_reasons(self) -> None:
        """Refusals are counted under a few fixed reasons (bounded label values)."""
        for why, reason in [
                ("replayed AuthID for user a", "replay"),
                ("duplicate session for user a (legacy)", "replay"),
                ("clock skew of +200 s for user a", "skew"),
                ("unknown user (no AEAD or legacy auth matched)", "unknown_user"),
                ("no complete header within the handshake timeout (4 s)", "timeout"),
                ("invalid username or password", "auth"),
                ("AEAD header authentication failed for user a", "probe")]:
            self.assertEqual(refusal_reason("vmess", why), reason, why)

    def test_human_bytes(self) -> None:
        self.assertEqual([human_bytes(n) for n in (0, 999, 1000, 1249, 48_300_000,
                                                   999_960, 12_400_000_000, 3 * 10**13)],
                         ["0 B", "999 B", "1.0 kB", "1.2 kB", "48.3 MB", "1.0 MB", "12.4 GB",
                          "30.0 TB"])


def _config(**extra: Any) -> dict[str, Any]:
    config = {"inbounds": [{"tag": "api", "port": 10085, "protocol": "dokodemo-door",
                            "settings": {"address": "127.0.0.1"}},
                           {"tag": "pub", "port": 10086, "protocol": "dokodemo-door",
                            "listen": "0.0.0.0", "settings": {"address": "127.0.0.1"}}],
              "outbounds": [{"protocol": "freedom", "tag": "direct"}],
              "routing": {"rules": [{"type": "field", "inboundTag": ["api", "pub"],
                                     "outboundTag": "api"}]}}
    config.update(extra)
    return config


class StatsConfigTests(SynchronousTestCase):
    """``stats``, ``api``, ``metrics`` and the policy switches."""

    def assertConfigError(self, data: Any, start: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(data)
        self.assertTrue(str(cm.exception).startswith(start), str(cm.exception))

    def test_full(self) -> None:
        config = parse_config(_config(
            stats={}, metrics={"port": 9100},
            api={"tag": "api", "services": ["StatsService", "LoggerService", "HandlerService",
                                            "RoutingService"]},
            policy={"system": {"statsInboundUplink": True, "statsOutboundDownlink": True},
                    "levels": {"1": {"statsUserUplink": True, "statsUserDownlink": True}}}))
        self.assertTrue(config.stats)
        self.assertEqual(config.api.tag, "api")  # type: ignore[union-attr]
        self.assertEqual(config.api.services, [  # type: ignore[union-attr]
            "v2ray.core.app.stats.command.StatsService",
            "v2ray.core.app.log.command.LoggerService",
            "v2ray.core.app.proxyman.command.HandlerService"])
        self.assertEqual((config.metrics.listen, config.metrics.port),  # type: ignore[union-attr]
                         ("127.0.0.1", 9100))
        self.assertEqual(config.policy.system, SystemPolicy(stats_inbound_uplink=True,
                                                            stats_outbound_downlink=True))
        level = config.policy.level(1)
        self.assertTrue(level.stats_user_uplink and level.stats_user_downlink)
        self.assertFalse(config.policy.level(0).stats_user_uplink)
        self.assertEqual(config.warnings,
                         ["api.services: RoutingService is not served by vtwist; ignored"])
        self.assertEqual(config.api_inbound_tags(), {"api", "pub"})
        # the API listens on 127.0.0.1 unless the inbound says otherwise
        self.assertEqual([i.listen for i in config.inbounds], ["127.0.0.1", "0.0.0.0"])

    def test_errors(self) -> None:
        self.assertConfigError(_config(api={"services": ["StatsService"]}),
                               "api.tag: is required")
        self.assertConfigError(_config(api={"tag": "api", "services": ["Nope"]}),
                               "api.services[0]: unknown API service 'Nope'")
        self.assertConfigError(_config(api={"tag": "direct"}),
                               "api.tag: an outbound is tagged 'direct' too")
        self.assertConfigError(_config(api={"tag": "api"}, metrics={"port": 0}),
                               "metrics.port: expected an integer 1-65535")
        self.assertConfigError(_config(), "routing.rules[0].outboundTag: no outbound is tagged 'api'")
        self.assertConfigError(_config(api={"tag": "api"}, policy={"system": {
            "statsInboundUplink": "yes"}}), "policy.system.statsInboundUplink")

    def test_no_warnings(self) -> None:
        """stats, api and metrics are known sections now."""
        config = parse_config(_config(stats={}, api={"tag": "api"}, metrics={"port": 9100}))
        self.assertEqual(config.warnings, [])


class TunnelCountingTests(TestCase):
    """A real relay through the service: counters, connection counts and the close line."""

    @defer.inlineCallbacks
    def test_relay_counts_and_close_line(self) -> Any:
        echo = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo))
        self.addCleanup(echo.stopListening)
        door = free_port()
        logs = LogCapture("vtwist.access")
        self.addCleanup(logs.stop)
        service = yield start_service({
            "stats": {}, "policy": {"system": {"statsInboundUplink": True,
                                               "statsInboundDownlink": True,
                                               "statsOutboundUplink": True,
                                               "statsOutboundDownlink": True}},
            "inbounds": [{"tag": "door", "port": door, "listen": "127.0.0.1",
                          "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1",
                                       "port": echo.getHost().port}}],
            "outbounds": [{"protocol": "freedom", "tag": "direct"}]}, self)
        stats = service.tunnels.stats
        client = Collector()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", door).connect(
            Factory.forProtocol(lambda: client))
        client.transport.write(b"x" * 1500)
        yield client.wait(1500)
        self.assertEqual(stats.active, 1)
        # counted while the connection is open
        self.assertEqual(stats.get("inbound>>>door>>>traffic>>>uplink"), 1500)
        self.assertEqual(stats.get("outbound>>>direct>>>traffic>>>downlink"), 1500)
        client.transport.write(b"y" * 500)
        yield client.wait(2000)
        client.transport.loseConnection()

        def closed() -> list[str]:
            return [e["line"] for e in logs.events if e.get("status") == "closed"]

        yield defer.ensureDeferred(wait_until(lambda: closed(), "no closed line"))
        [line] = closed()
        self.assertRegex(line, r"^from 127\.0\.0\.1:\d+ closed tcp:127\.0\.0\.1:\d+ "
                               r"\[door >> direct\] up 2\.0 kB down 2\.0 kB \d+\.\d s$")
        [event] = [e for e in logs.events if e.get("status") == "closed"]
        self.assertEqual((event["up"], event["down"]), (2000, 2000))
        self.assertEqual(stats.query("traffic"), [
            ("inbound>>>door>>>traffic>>>downlink", 2000),
            ("inbound>>>door>>>traffic>>>uplink", 2000),
            ("outbound>>>direct>>>traffic>>>downlink", 2000),
            ("outbound>>>direct>>>traffic>>>uplink", 2000)])
        self.assertEqual((stats.active, stats.opened, stats.flows), (0, 1, set()))

    @defer.inlineCallbacks
    def test_splice_counts(self) -> Any:
        """Bytes moved by the kernel splice relay are counted like the others."""
        from vtwist.tunnel import splice

        if not splice.enabled():
            raise AssertionError("this test needs Linux splice (VTWIST_SPLICE unset)")
        echo = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo))
        self.addCleanup(echo.stopListening)
        door = free_port()
        service = yield start_service({
            "stats": {}, "policy": {"system": {"statsInboundUplink": True,
                                               "statsInboundDownlink": True}},
            "inbounds": [{"tag": "door", "port": door, "listen": "127.0.0.1",
                          "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1",
                                       "port": echo.getHost().port}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        stats = service.tunnels.stats
        client = Collector()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", door).connect(
            Factory.forProtocol(lambda: client))
        started = splice.stats.started
        client.transport.write(b"a" * 100)
        yield client.wait(100)
        yield defer.ensureDeferred(wait_until(lambda: splice.stats.started > started,
                                              "the relay did not splice"))
        spliced = splice.stats.bytes
        client.transport.write(b"b" * 300_000)
        yield client.wait(300_100)
        self.assertGreaterEqual(splice.stats.bytes - spliced, 600_000)
        self.assertEqual(stats.get("inbound>>>door>>>traffic>>>uplink"), 300_100)
        self.assertEqual(stats.get("inbound>>>door>>>traffic>>>downlink"), 300_100)
        client.transport.loseConnection()
        yield defer.ensureDeferred(wait_until(lambda: stats.active == 0, "still open"))
