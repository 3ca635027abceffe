"""The ``dns`` outbound end to end: ``dig`` (UDP and TCP) to a dokodemo-door whose traffic
routing sends to the dns outbound; A/AAAA come from the internal DNS (hosts, then a local
twisted.names server), other types are forwarded to the configured server."""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from twisted.internet import defer, reactor, threads, utils
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.dns_helpers import Zone, start_dns
from tests.netutil import free_port
from tests.services import start_service
from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.proxy.dns.settings import DnsOutboundSettings


def dig(port: int, *args: str) -> defer.Deferred[str]:
    """``dig @127.0.0.1 -p PORT ARGS`` (5 s per try, 2 tries); its output."""
    return utils.getProcessOutput(
        shutil.which("dig") or "dig",
        ("@127.0.0.1", "-p", str(port), "+tries=2", "+time=5", *args), errortoo=True)


def config(door: int, server: int, **dns: Any) -> dict[str, Any]:
    return {
        "log": {"loglevel": "warning", "access": "none"},
        "dns": {"servers": [{"address": "127.0.0.1", "port": server}], "tag": "dns-in",
                **dns},
        "inbounds": [{"tag": "door", "protocol": "dokodemo-door", "listen": "127.0.0.1",
                      "port": door, "settings": {"address": "192.0.2.53", "port": 53,
                                                 "network": "tcp,udp"}}],
        "outbounds": [{"tag": "dns-out", "protocol": "dns",
                       "settings": {"address": "127.0.0.1", "port": server}},
                      {"tag": "direct", "protocol": "freedom"}],
    }


class DnsOutboundTests(TestCase):
    """dig -> dokodemo-door -> dns outbound."""

    timeout = 90

    def setUp(self) -> Any:
        if shutil.which("dig") is None:
            raise SkipTest("dig is not installed (apt-get install -y dnsutils)")
        self.zone = Zone({"a.test": ["10.0.0.1", "fd00::1"], "b.test": ["192.0.2.7"]})
        self.zone.txt["t.test"] = "forwarded text"
        self.server = start_dns(reactor, self.zone, self)
        self.door = free_port(udp_too=True)
        # no routing rule: the internal DNS's own queries (tag dns-in) reach the dns outbound
        # too, which must forward them rather than answer them from the internal DNS (a loop)
        return start_service(config(self.door, self.server,
                                    hosts={"static.test": "10.7.7.7"}), self)

    @defer.inlineCallbacks
    def test_a_and_aaaa_over_udp(self) -> Any:
        out = yield dig(self.door, "a.test", "A", "+short")
        self.assertEqual(out.decode().split(), ["10.0.0.1"])
        out = yield dig(self.door, "a.test", "AAAA", "+short")
        self.assertEqual(out.decode().split(), ["fd00::1"])
        out = yield dig(self.door, "static.test", "A", "+short")
        self.assertEqual(out.decode().split(), ["10.7.7.7"])  # from hosts
        self.assertNotIn(("static.test", 1), self.zone.queries)

    @defer.inlineCallbacks
    def test_over_tcp(self) -> Any:
        out = yield dig(self.door, "+tcp", "b.test", "A", "+short")
        self.assertEqual(out.decode().split(), ["192.0.2.7"])
        out = yield dig(self.door, "+tcp", "t.test", "TXT", "+short")
        self.assertEqual(out.decode().strip(), '"forwarded text"')

    @defer.inlineCallbacks
    def test_answers_flags_and_ttl(self) -> Any:
        out = (yield dig(self.door, "b.test", "A", "+noall", "+answer", "+comments")).decode()
        self.assertIn("status: NOERROR", out)
        self.assertIn("flags: qr aa rd ra", out)
        self.assertRegex(out, r"b\.test\.\s+600\s+IN\s+A\s+192\.0\.2\.7")

    @defer.inlineCallbacks
    def test_nxdomain_and_no_address(self) -> Any:
        out = (yield dig(self.door, "missing.test", "A")).decode()
        self.assertIn("status: NXDOMAIN", out)
        out = (yield dig(self.door, "b.test", "AAAA")).decode()
        self.assertIn("status: NOERROR", out)
        self.assertIn("ANSWER: 0", out)

    @defer.inlineCallbacks
    def test_other_types_forwarded_over_udp(self) -> Any:
        out = yield dig(self.door, "t.test", "TXT", "+short")
        self.assertEqual(out.decode().strip(), '"forwarded text"')
        self.assertIn(("t.test", 16), self.zone.queries)

    @defer.inlineCallbacks
    def test_garbage_is_dropped(self) -> Any:
        """Malformed datagrams and a malformed TCP message: dropped, nothing logged, and the
        next good query is answered."""
        def send_garbage() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for junk in (b"", b"\x01", b"\x12\x34" + b"\xff" * 40, os.urandom(600)):
                    s.sendto(junk, ("127.0.0.1", self.door))
            with socket.create_connection(("127.0.0.1", self.door), timeout=5) as s:
                s.sendall(b"\x00\x05hello")
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(s.recv(100), b"")  # closed once the client is done
        yield threads.deferToThread(send_garbage)
        out = yield dig(self.door, "b.test", "A", "+short")
        self.assertEqual(out.decode().split(), ["192.0.2.7"])
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_cache(self) -> Any:
        for _ in range(3):
            out = yield dig(self.door, "b.test", "A", "+short")
            self.assertEqual(out.decode().split(), ["192.0.2.7"])
        self.assertEqual(self.zone.queries.count(("b.test", 1)), 1)


class ChainedDnsOutboundTests(TestCase):
    """dig -> dokodemo-door -> dns outbound with ``proxySettings``: a forwarded UDP query
    goes through the proxy outbound's UDP (a SOCKS outbound to a SOCKS inbound of the same
    service), as V2Ray 4.34 dials ``udp:`` through the proxy outbound."""

    timeout = 90

    @defer.inlineCallbacks
    def test_forwarded_udp_goes_through_the_proxy(self) -> Any:
        from twisted.logger import formatEvent

        from tests.netutil import wait_until
        from vtwist.testing.doubles import LogCapture

        if shutil.which("dig") is None:
            raise SkipTest("dig is not installed (apt-get install -y dnsutils)")
        zone = Zone({"a.test": ["10.0.0.1"]})
        zone.txt["t.test"] = "through the proxy"
        server = start_dns(reactor, zone, self)
        door, relay = free_port(udp_too=True), free_port(udp_too=True)
        data = config(door, server)
        data["log"] = {"loglevel": "warning"}
        data["inbounds"].append({"tag": "relay", "protocol": "socks", "listen": "127.0.0.1",
                                 "port": relay, "settings": {"udp": True,
                                                             "ip": "127.0.0.1"}})
        data["outbounds"] = [
            {"tag": "dns-out", "protocol": "dns", "proxySettings": {"tag": "via"},
             "settings": {"address": "127.0.0.1", "port": server}},
            {"tag": "via", "protocol": "socks",
             "settings": {"servers": [{"address": "127.0.0.1", "port": relay}]}},
            {"tag": "direct", "protocol": "freedom"}]
        data["routing"] = {"rules": [{"type": "field", "inboundTag": ["relay"],
                                      "outboundTag": "direct"}]}
        logs = LogCapture("vtwist.access")
        self.addCleanup(logs.stop)
        yield start_service(data, self)
        out = yield dig(door, "t.test", "TXT", "+short")
        self.assertEqual(out.decode().strip(), '"through the proxy"')
        self.assertIn(("t.test", 16), zone.queries)
        relayed = f"accepted udp:127.0.0.1:{server} [relay >> direct]"
        yield defer.ensureDeferred(wait_until(
            lambda: any(relayed in formatEvent(e) for e in logs.events), relayed))


class DnsOutboundSettingsTests(SynchronousTestCase):
    """The dns outbound's settings as 4.34 reads them; errors name the JSON path."""

    def test_settings(self) -> None:
        c = parse_config({"outbounds": [{"protocol": "dns", "settings": {
            "network": "TCP", "address": "1.1.1.1", "port": 53}}, {"protocol": "dns"}]})
        self.assertEqual(c.outbounds[0].settings, DnsOutboundSettings("tcp", "1.1.1.1", 53))
        self.assertEqual(c.outbounds[1].settings, DnsOutboundSettings())
        for settings, path in [({"network": "quic"}, "outbounds[0].settings.network"),
                               ({"address": "not a host!"}, "outbounds[0].settings.address"),
                               ({"port": 70000}, "outbounds[0].settings.port")]:
            with self.assertRaises(ConfigError) as e:
                parse_config({"outbounds": [{"protocol": "dns", "settings": settings}]})
            self.assertEqual(e.exception.path, path)
