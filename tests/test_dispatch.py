"""The tunnel service's access lines."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.blackhole.outbound import BlackholeOutbound
from vtwist.testing.doubles import log_lines
from vtwist.tunnel.access import AccessLog
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService


class AccessLogTests(SynchronousTestCase):
    def test_line_and_switch_off(self) -> None:
        lines = log_lines(self, "vtwist.access")
        outbound = BlackholeOutbound(Clock(), "block")
        dest = Destination.tcp("example.com", 443)
        AccessLog().accepted("127.0.0.1:50000", dest, "socks-in", outbound.tag, "a@b")
        self.assertEqual(lines, ["from 127.0.0.1:50000 accepted tcp:example.com:443 "
                                 "[socks-in >> block] email: a@b"])
        AccessLog(enabled=False).accepted("x:1", dest, "in", outbound.tag)
        self.assertEqual(len(lines), 1)

    def test_the_service_follows_the_dispatchers_switch(self) -> None:
        """``log.access: "none"`` (the dispatcher's ``log_access``) silences accepted and
        rejected lines alike."""
        lines = log_lines(self, "vtwist.access")
        clock = Clock()
        quiet = TunnelService(Dispatcher([BlackholeOutbound(clock, "b")], log_access=False), clock)
        quiet.connect(Destination.tcp("example.com", 80), source="x:1")
        quiet.reject("x:2", "socks", "no")
        self.assertEqual(lines, [])
        loud = TunnelService(Dispatcher([BlackholeOutbound(clock, "b")]), clock)
        loud.connect(Destination.tcp("example.com", 80), inbound_tag="in", source="x:1")
        loud.reject("x:2", "socks", "no")
        self.assertEqual(lines, ["from x:1 accepted tcp:example.com:80 [in >> b]",
                                 "from x:2 rejected socks: no"])
