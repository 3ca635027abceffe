"""Routing end to end on 127.0.0.1: a SOCKS inbound, freedom "direct" and blackhole "block".

curl asks the running service (built from a V2Ray-style config with ``routing`` rules) for
a blocked domain and sees the blackhole's HTTP 403; other requests reach the local web server.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from .netutil import free_port
from .services import serve_web, start_service
from .socks_helpers import LogCapture

TIMEOUT = 10


class RoutingCurlTests(TestCase):
    timeout = 30
    routing: dict[str, Any] = {"rules": [
        {"type": "field", "domain": ["domain:blocked.test", "keyword:tracker"],
         "outboundTag": "block"}]}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.web_port = serve_web(self, {b"hello": b"hello through socks\n"})
        self.socks_port = free_port()
        config = {
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": self.socks_port, "settings": {"auth": "noauth"}}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"},
                          {"tag": "block", "protocol": "blackhole",
                           "settings": {"response": {"type": "http"}}}],
            "routing": self.routing}
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        listening = start_service(config, self)
        # The blackhole closes its connections a second after its 403 (as V2Ray does).
        self.addCleanup(task.deferLater, reactor, 1.1, lambda: None)
        yield listening

    def get(self, host: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """GET /hello via the proxy, the domain resolved by the proxy; prints the status."""
        return getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", str(TIMEOUT), "-w", "\\n%{http_code}",
                     "--socks5-hostname", f"127.0.0.1:{self.socks_port}",
                     f"http://{host}:{self.web_port}/hello"], env=dict(os.environ))

    def access(self) -> list[str]:
        """The accepted lines (a relayed connection's closed line comes when it closes)."""
        return [formatEvent(e) for e in self.logs.events
                if e["log_namespace"] == "vtwist.access" and e.get("status") != "closed"]

    @defer.inlineCallbacks
    def test_blocked_domain_and_passing_request(self) -> Any:
        out, err, code = yield self.get("www.blocked.test")
        self.assertEqual((code, out), (0, b"\n403"), err)
        out, err, code = yield self.get("my-tracker.example")
        self.assertEqual((code, out), (0, b"\n403"), err)
        out, err, code = yield self.get("localhost")
        self.assertEqual((code, out), (0, b"hello through socks\n\n200"), err)
        out, err, code = yield self.get("127.0.0.1")
        self.assertEqual((code, out), (0, b"hello through socks\n\n200"), err)
        lines = self.access()
        self.assertEqual(len(lines), 4, lines)
        self.assertTrue(lines[0].endswith(f"accepted tcp:www.blocked.test:{self.web_port} "
                                          "[socks-in >> block]"), lines[0])
        self.assertIn("[socks-in >> block]", lines[1])
        self.assertIn("[socks-in >> direct]", lines[2])
        self.assertIn("[socks-in >> direct]", lines[3])

    async def test_blackholed_connection_gets_closed_line(self) -> None:
        """A connection routed to the blackhole gets its closed line (bytes and duration)
        when the blackhole ends it, a second after its 403."""
        from .netutil import wait_until

        out, err, code = await self.get("www.blocked.test")
        self.assertEqual((code, out), (0, b"\n403"), err)

        def closed() -> list[str]:
            return [formatEvent(e) for e in self.logs.events
                    if e["log_namespace"] == "vtwist.access" and e.get("status") == "closed"]

        await wait_until(lambda: bool(closed()), "a closed line")
        [line] = closed()
        self.assertIn(f"closed tcp:www.blocked.test:{self.web_port} [socks-in >> block] up ",
                      line)
        self.assertIn(" down 101 B ", line)


class ResolvingRoutingCurlTests(RoutingCurlTests):
    """IPOnDemand: "localhost" is looked up by the system resolver and hits an IP rule."""

    routing = {"domainStrategy": "IPOnDemand", "rules": [
        {"type": "field", "domain": ["full:www.blocked.test"], "outboundTag": "block"},
        {"type": "field", "ip": ["127.0.0.1/32", "::1"], "port": "1-65535",
         "outboundTag": "block"}]}

    @defer.inlineCallbacks
    def test_blocked_domain_and_passing_request(self) -> Any:
        out, err, code = yield self.get("www.blocked.test")
        self.assertEqual((code, out), (0, b"\n403"), err)
        out, err, code = yield self.get("localhost")  # resolves to loopback: blocked
        self.assertEqual((code, out), (0, b"\n403"), err)
        out, err, code = yield self.get("127.0.0.1")
        self.assertEqual((code, out), (0, b"\n403"), err)
        # Another loopback address is outside the rule: it goes direct.
        serve_web(self, {b"hello": b"other loopback\n"}, self.web_port, "127.0.0.2")
        out, err, code = yield self.get("127.0.0.2")
        self.assertEqual((code, out), (0, b"other loopback\n\n200"), err)
        lines = self.access()
        self.assertEqual(len(lines), 4, lines)
        self.assertTrue(all("[socks-in >> block]" in line for line in lines[:3]), lines)
        self.assertIn("[socks-in >> direct]", lines[3])
