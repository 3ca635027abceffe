"""A worker's drain on SIGTERM (:mod:`vtwist.app.drain`) on a fake clock, with stand-in
inbound services (the real processes: ``tests.test_workers`` ``test_sigterm_drains``)."""

from __future__ import annotations

import weakref
from typing import Any

from twisted.internet import defer, tcp
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.app import drain
from vtwist.testing.doubles import LogCapture


class FakeTCPPort(tcp.Port):
    """A listening port that only records its stop."""

    def __init__(self) -> None:  # (no socket)
        self.stopped = False

    def stopListening(self) -> defer.Deferred[None]:  # noqa: N802 - Twisted's name
        self.stopped = True
        return defer.succeed(None)


class FakeUDPPort:
    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        self.stopped = True


class Transport:
    def __init__(self) -> None:
        self.disconnected = False


class Proto:
    def __init__(self) -> None:
        self.transport: Any = Transport()


class Factory:
    def __init__(self) -> None:
        self.connections: weakref.WeakSet[Proto] = weakref.WeakSet()


class Inbound:
    def __init__(self, port: Any) -> None:
        self.port = port
        self.factory = Factory()


class Service:
    def __init__(self, *inbounds: Inbound) -> None:
        self.inbound_services = list(inbounds)

    def getServiceNamed(self, name: str) -> Any:  # noqa: N802 - Twisted's name
        raise KeyError(name)


class DrainTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.clock = Clock()
        self.tcp = Inbound(FakeTCPPort())
        self.udp = Inbound(FakeUDPPort())
        self.service = Service(self.tcp, self.udp)
        self.logs = LogCapture("vtwist.workers")
        self.addCleanup(self.logs.stop)

    def test_stops_stream_listeners_only(self) -> None:
        """TCP (and UNIX) ports stop; a UDP listener keeps its sessions' socket."""
        port = self.tcp.port
        result = self.successResultOf(drain.drain(self.service, self.clock))
        self.assertEqual(result, 0)
        self.assertTrue(port.stopped)
        self.assertIsNone(self.tcp.port)
        self.assertFalse(self.udp.port.stopped)

    def test_waits_for_live_connections(self) -> None:
        """Fires once the last connection (on either inbound) has ended."""
        first, second = Proto(), Proto()
        self.tcp.factory.connections.add(first)
        self.udp.factory.connections.add(second)
        done = drain.drain(self.service, self.clock)
        self.assertIn("draining 2 connection(s)", "\n".join(self.logs.lines()))
        self.clock.advance(1)
        self.assertNoResult(done)
        first.transport.disconnected = True
        self.clock.advance(1)
        self.assertNoResult(done)
        del second  # its protocol is gone (it was garbage)
        self.clock.advance(drain.CHECK_INTERVAL)
        self.assertEqual(self.successResultOf(done), 0)
        self.assertLess(self.clock.seconds(), drain.DRAIN_TIMEOUT)

    def test_gives_up_after_the_timeout(self) -> None:
        """A connection that stays open: fires with the count at the limit, one line."""
        held = Proto()
        self.tcp.factory.connections.add(held)
        done = drain.drain(self.service, self.clock, timeout=3.0)
        self.clock.advance(2.9)
        self.assertNoResult(done)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(done), 1)
        self.assertIn("1 connection(s) still open after 3 s: closing them", "\n".join(self.logs.lines()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ended_connection_in_a_cycle_counts_as_gone(self) -> None:
        """A protocol kept only by a reference cycle with a transport that does not say it
        ended is collected, not waited for."""
        class Silent:  # a transport with no ``disconnected``
            protocol: Any = None

        proto = Proto()
        proto.transport = Silent()
        proto.transport.protocol = proto
        self.tcp.factory.connections.add(proto)
        del proto
        self.assertEqual(drain.live_connections(self.service), 0)
