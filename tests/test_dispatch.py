"""The dispatcher's access lines."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import log_lines
from vtwist.address import Destination
from vtwist.dispatch import Dispatcher
from vtwist.proxy.blackhole import BlackholeOutbound


class AccessLogTests(SynchronousTestCase):
    def test_line_and_switch_off(self) -> None:
        lines = log_lines(self, "vtwist.access")
        outbound = BlackholeOutbound(Clock(), "block")
        dest = Destination.tcp("example.com", 443)
        Dispatcher([outbound]).logAccess("127.0.0.1:50000", dest, "socks-in", outbound, "a@b")
        self.assertEqual(lines, ["from 127.0.0.1:50000 accepted tcp:example.com:443 "
                                 "[socks-in >> block] email: a@b"])
        Dispatcher([outbound], log_access=False).logAccess("x:1", dest, "in", outbound)
        self.assertEqual(len(lines), 1)
