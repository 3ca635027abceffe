"""``allocate``: random ports (a fake clock and recorded listens), and the ports a real
service opens accepting connections."""

from __future__ import annotations

import random
import socket
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import free_port
from tests.services import start_service
from vtwist.app.allocate import ALWAYS_MINUTES, RandomPortsService, StaticPorts
from vtwist.config.model import AllocateSettings, InboundConfig


class _Listener:
    def __init__(self, endpoint: _Endpoint) -> None:
        self.endpoint = endpoint
        self.open = True

    def stopListening(self) -> None:
        self.open = False


class _Endpoint:
    def __init__(self, port: int, log: dict[int, list[_Listener]], refuse: set[int]) -> None:
        self.port, self.log, self.refuse = port, log, refuse

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        if self.port in self.refuse:
            return defer.fail(OSError("in use"))
        listener = _Listener(self)
        self.log.setdefault(self.port, []).append(listener)
        return defer.succeed(listener)


class _Factory:
    closed = False

    def closeAll(self) -> None:
        self.closed = True


class RandomPortsTests(SynchronousTestCase):
    def service(self, ports: range, concurrency: int = 2, refresh: int = 5,
                refuse: set[int] | None = None) -> tuple[RandomPortsService, Clock, dict]:
        clock = Clock()
        listens: dict[int, list[_Listener]] = {}
        inbound = InboundConfig("vmess", list(ports),
                                allocate=AllocateSettings("random", refresh, concurrency))
        s = RandomPortsService(inbound, clock, _Factory,
                               lambda p: _Endpoint(p, listens, refuse or set()),
                               "vmess inbound 'dyn'", rng=random.Random(7))
        s.startService()
        return s, clock, listens

    def open_ports(self, listens: dict[int, list[_Listener]]) -> set[int]:
        return {p for p, ls in listens.items() if any(lis.open for lis in ls)}

    def test_concurrency_ports_from_the_range_then_re_picked(self) -> None:
        s, clock, listens = self.service(range(20000, 20010))
        first = {w.port for w in s.current}
        self.assertEqual(len(first), 2)
        self.assertTrue(first <= set(range(20000, 20010)))
        self.assertIsNone(s.failure)
        self.assertTrue(s.listening.called)
        clock.advance(5 * 60)
        second = {w.port for w in s.current}
        self.assertEqual(len(second), 2)
        self.assertFalse(first & second, "an open port is never picked again")
        self.assertEqual(self.open_ports(listens), first | second)
        clock.advance(5 * 60)  # the first generation is 2 x refresh old: closed
        third = {w.port for w in s.current}
        self.assertEqual(self.open_ports(listens), second | third)
        self.assertFalse(second & third)

    def test_pick_minutes_left(self) -> None:
        s, clock, _ = self.service(range(20000, 20010), refresh=5)
        factory, port, minutes = s.pick()
        self.assertIn(port, {w.port for w in s.current})
        self.assertEqual(minutes, 5)
        clock.advance(3 * 60 + 1)
        self.assertEqual(s.pick()[2], 2)

    def test_stop_closes_everything(self) -> None:
        s, clock, listens = self.service(range(20000, 20010))
        clock.advance(5 * 60)
        factories = [w.factory for g in s.generations for w in g]
        s.stopService()
        self.assertEqual(self.open_ports(listens), set())
        self.assertTrue(all(f.closed for f in factories))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNone(s.pick())

    def test_port_that_cannot_listen_is_skipped(self) -> None:
        s, _, _ = self.service(range(20000, 20004), concurrency=3, refuse={20000, 20001})
        self.assertTrue({w.port for w in s.current} <= {20002, 20003})
        self.assertIsNone(s.failure)

    def test_a_taken_port_is_replaced_by_another_of_the_range(self) -> None:
        """Another program holding picked ports does not shrink the generation."""
        s, _, listens = self.service(range(20000, 20010), concurrency=2,
                                     refuse=set(range(20000, 20008)))
        self.assertEqual({w.port for w in s.current}, {20008, 20009})
        self.assertEqual(self.open_ports(listens), {20008, 20009})

    def test_nothing_listens(self) -> None:
        s, _, _ = self.service(range(20000, 20004), concurrency=2,
                               refuse=set(range(20000, 20004)))
        self.assertIsNotNone(s.failure)
        self.assertIsNone(s.pick())

    def test_range_runs_out(self) -> None:
        """4.34 would spin forever looking for a free port; vtwist opens fewer."""
        s, clock, _ = self.service(range(20000, 20004), concurrency=3)
        clock.advance(5 * 60)
        self.assertEqual(len(s.current), 1)


class StaticPortsTests(SynchronousTestCase):
    def test_pick(self) -> None:
        f = object()
        self.assertEqual(StaticPorts(f, [7]).pick(), (f, 7, ALWAYS_MINUTES))
        self.assertIsNone(StaticPorts(f, []).pick())


class RandomPortsServiceE2E(TestCase):
    async def test_random_ports_accept_connections(self) -> None:
        base = free_port()
        ports = list(range(base, base + 8))
        config = {"inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "tag": "dyn",
                                "port": f"{ports[0]}-{ports[-1]}",
                                "allocate": {"strategy": "random", "concurrency": 3,
                                             "refresh": 1},
                                "settings": {"auth": "noauth"}}],
                  "outbounds": [{"protocol": "freedom"}]}
        service = await start_service(config, self)
        (dyn,) = service.inbound_services
        open_ports = sorted(w.port for w in dyn.current)
        self.assertEqual(len(open_ports), 3)
        def probe() -> list[int]:
            """SOCKS greetings to every port of the range (in a thread: the reactor runs)."""
            accepting = []
            for port in ports:
                s = socket.socket()
                s.settimeout(2)
                try:
                    s.connect(("127.0.0.1", port))
                    s.sendall(b"\x05\x01\x00")
                    if s.recv(2) == b"\x05\x00":
                        accepting.append(port)
                except OSError:
                    pass
                finally:
                    s.close()
            return accepting

        accepting = await threads.deferToThread(probe)
        self.assertEqual(accepting, open_ports)

