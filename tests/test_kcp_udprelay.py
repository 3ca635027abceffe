"""The UDP impairment relay: counters, seeded determinism, reordering, duplication."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from vtwist.testing.doubles import UDPEcho
from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay


class _Client(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


class RelayTests(TestCase):
    timeout = 30

    async def run_relay(self, up: Impairment, down: Impairment, seed: int,
                        n: int = 1000) -> tuple[UDPImpairmentRelay, UDPEcho, _Client]:
        echo = UDPEcho()
        eport = reactor.listenUDP(0, echo, interface="127.0.0.1")
        self.addCleanup(eport.stopListening)
        relay = UDPImpairmentRelay(reactor, ("127.0.0.1", eport.getHost().port), up, down,
                                   seed=seed)
        rport = relay.start()
        self.addCleanup(relay.stop)
        client = _Client()
        cport = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(cport.stopListening)
        for i in range(n):
            cport.write(i.to_bytes(4, "big") + b"x" * 100, ("127.0.0.1", rport))
            if i % 100 == 99:
                await task.deferLater(reactor, 0.005, lambda: None)
        for _ in range(100):
            await task.deferLater(reactor, 0.02, lambda: None)
            st = relay.stats
            if (st["c2s"].sent == len(echo.got) and st["s2c"].received == len(echo.got)
                    and st["s2c"].sent == len(client.got)
                    and st["c2s"].received == n and not relay._pending):
                break
        return relay, echo, client

    def test_clean_forwarding(self) -> defer.Deferred:
        async def run() -> None:
            relay, echo, client = await self.run_relay(Impairment(), Impairment(), 1, 300)
            self.assertEqual(len(client.got), 300)
            self.assertEqual(sorted(client.got), sorted(echo.got))
            self.assertEqual(relay.stats["c2s"].dropped, 0)
        return defer.ensureDeferred(run())

    def test_loss_duplicate_reorder_counted(self) -> defer.Deferred:
        async def run() -> None:
            imp = Impairment(loss=0.2, delay=0.001, reorder=0.1, reorder_gap=0.01,
                             duplicate=0.1)
            relay, echo, client = await self.run_relay(imp, Impairment(), 7)
            c2s = relay.stats["c2s"]
            self.assertEqual(c2s.received, 1000)
            self.assertTrue(150 < c2s.dropped < 250, c2s)
            self.assertGreater(c2s.duplicated, 40)
            self.assertGreater(c2s.reordered, 40)
            self.assertEqual(c2s.sent, 1000 - c2s.dropped + c2s.duplicated)
            self.assertEqual(len(echo.got), c2s.sent)
            seq = [int.from_bytes(d[:4], "big") for d in echo.got]
            self.assertNotEqual(seq, sorted(seq), "reordering happened")
            self.assertTrue(all(d[4:] == b"x" * 100 for d in echo.got), "bytes unchanged")
        return defer.ensureDeferred(run())

    def test_seeded_runs_repeat(self) -> defer.Deferred:
        async def run() -> None:
            imp = Impairment(loss=0.3)
            _, echo1, _ = await self.run_relay(imp, Impairment(), 42, 500)
            _, echo2, _ = await self.run_relay(imp, Impairment(), 42, 500)
            self.assertEqual(sorted(echo1.got), sorted(echo2.got))
        return defer.ensureDeferred(run())

    def test_corruption_switch(self) -> defer.Deferred:
        async def run() -> None:
            relay, echo, _ = await self.run_relay(Impairment(corrupt=1.0), Impairment(), 3, 100)
            self.assertEqual(relay.stats["c2s"].corrupted, 100)
            self.assertEqual(len(echo.got), 100)
            for d in echo.got:
                # exactly one byte flipped: in the payload, or in the index (which then
                # reads >= 100, since every index byte of 0..99 flips to a big value)
                flipped = sum(b != ord("x") for b in d[4:])
                index = int.from_bytes(d[:4], "big")
                self.assertEqual(len(d), 104)
                self.assertTrue((flipped == 1 and index < 100) or (flipped == 0 and index >= 100),
                                d.hex())
        return defer.ensureDeferred(run())
