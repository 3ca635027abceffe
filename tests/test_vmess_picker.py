"""The VMess server picker: configured servers in turn, plus SwitchAccount offers until they
expire; the outbound takes an offer a server's response carries."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.vmess.body import SEC_LEGACY
from vtwist.proxy.vmess.header import SwitchAccount
from vtwist.proxy.vmess.outbound import VMessOutbound
from vtwist.proxy.vmess.picker import MAX_OFFERS, ServerPicker
from vtwist.proxy.vmess.settings import VMessOutboundSettings, VMessServer
from vtwist.proxy.vmess.users import Account

A = Account(os.urandom(16), email="a")
B = Account(os.urandom(16), email="b")


def offer(port: int = 20001, host: str = "", minutes: int = 5) -> SwitchAccount:
    return SwitchAccount(host, port, os.urandom(16), 4, 1, minutes)


class PickerTests(SynchronousTestCase):
    def test_round_robin_then_offers_until_they_expire(self) -> None:
        picker = ServerPicker([VMessServer("s1", 1, [A, B])])
        self.assertEqual([picker.pick(0).account for _ in range(3)], [A, B, A])
        cmd = offer(minutes=2)
        picker.offer(cmd, "s1", now=100)
        picked = [picker.pick(110) for _ in range(3)]
        dynamic = [c for c in picked if c.server.port == 20001]
        self.assertEqual(len(dynamic), 1)
        [d] = dynamic
        self.assertEqual((d.server.address, d.account.uuid, d.account.alter_id, d.account.level,
                          d.security), ("s1", cmd.uuid, 4, 1, SEC_LEGACY))
        self.assertTrue(all(c.server.port == 1 for c in (picker.pick(221) for _ in range(5))))

    def test_repeated_offers_do_not_grow(self) -> None:
        picker = ServerPicker([VMessServer("s1", 1, [A])])
        cmd = offer(host="other.test")
        for now in range(10):
            picker.offer(cmd, "s1", now)
        self.assertEqual(len(picker.offers), 1)
        self.assertEqual(next(iter(picker.offers.values())).server.address, "other.test")
        for port in range(MAX_OFFERS + 5):
            picker.offer(offer(30000 + port), "s1", 0)
        self.assertEqual(len(picker.offers), MAX_OFFERS)


class OutboundTests(SynchronousTestCase):
    def test_the_outbound_takes_an_offer_from_a_response(self) -> None:
        clock = Clock()
        outbound = VMessOutbound(clock, "out", VMessOutboundSettings([VMessServer("s1", 1, [A])]),
                                 dialer=lambda host, port: (host, port))
        dest = Destination.tcp("example.com", 80)
        first = outbound.endpointFor(dest)
        self.assertEqual(first.transport_endpoint, ("s1", 1))
        first.onCommand(offer(20002))  # as the client protocol does on the response header
        ports = {outbound.endpointFor(dest).transport_endpoint for _ in range(2)}
        self.assertEqual(ports, {("s1", 1), ("s1", 20002)})
