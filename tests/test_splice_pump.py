"""How the zero-copy relay moves bulk (:mod:`vtwist.tunnel.splice`): a bulk relay switching
early, pipes that grow for bulk (within a budget; a quota that refuses), the per-event byte
budget, and a direction under steady backpressure that stays registered for writability
instead of switching its reactor registrations per chunk. Real sockets (the proxy runs in
the test's reactor), and a clock for when the switch looks."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from types import SimpleNamespace
from typing import Any
from unittest import mock

from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.tcp import Connection
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from vtwist.tunnel import splice
from vtwist.tunnel.splice import BULK_PIPE_SIZE, PIPE_SIZE, SocketEnd, stats

from .test_socks_e2e import socks_connect
from .test_splice import (
    MB,
    SETTLE,
    TIMEOUT,
    SpliceTestBase,
    Target,
    digest_of,
    recv_digest,
    send_all,
)


def upload(port: int, target: Target, total: int, seed: bytes) -> None:
    """Through the SOCKS inbound on ``port``: wait for the splice, send ``total`` bytes,
    half-close, wait for the target's close."""
    with socks_connect(port, "127.0.0.1", target.port) as sock:
        sock.settimeout(TIMEOUT)
        time.sleep(SETTLE)
        send_all(sock, total, seed)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)


def slow_reader(sock: socket.socket) -> tuple[int, bytes]:
    """Read to EOF in 64 KiB steps with a pause now and then: a destination that keeps
    the relay's socket full."""
    import hashlib

    h = hashlib.sha256()
    count = 0
    while True:
        data = sock.recv(64 * 1024)
        if not data:
            return count, h.digest()
        h.update(data)
        count += len(data)
        if count % MB < 64 * 1024:
            time.sleep(0.002)


class PumpTests(SpliceTestBase):
    def pipes_made(self) -> list[Any]:
        """Every pipe the splicers open from now on (their sizes survive the close)."""
        made: list[Any] = []
        original = splice._Pipe.open  # (PipeWatch's recorder: the fds are still checked)

        def record(pipe: Any) -> None:
            original(pipe)
            made.append(pipe)

        patcher = mock.patch.object(splice._Pipe, "open", record)
        patcher.start()
        self.addCleanup(patcher.stop)
        return made

    @defer.inlineCallbacks
    def test_bulk_grows_its_pipe(self) -> Any:
        """A direction that moves bulk grows its pipe to BULK_PIPE_SIZE; the direction that
        carried one byte keeps the size it started with."""
        made = self.pipes_made()
        total = 16 * MB
        target = Target(self, lambda s: (recv_digest(s), s.sendall(b"k"))[0])
        yield threads.deferToThread(upload, self.port, target, total, b"bulk")
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"bulk")))
        self.assertEqual(self.spliced(), 1)
        sizes = {pipe.src: (pipe.size, pipe.grown) for pipe in made}
        self.assertEqual(sizes, {0: (BULK_PIPE_SIZE, True), 1: (PIPE_SIZE, False)})
        yield self.assertNothingLeft()
        self.assertEqual(stats.grown, 0)  # given back when the pipe closed

    @defer.inlineCallbacks
    def test_growth_budget_spent(self) -> Any:
        """Once the process's pipes have grown by its budget, a bulk relay keeps the pipe
        it started with (and still moves every byte)."""
        made = self.pipes_made()
        self.patch(splice, "_budget", float(BULK_PIPE_SIZE - PIPE_SIZE - 1))
        total = 16 * MB
        target = Target(self, lambda s: (recv_digest(s), s.sendall(b"k"))[0])
        yield threads.deferToThread(upload, self.port, target, total, b"budget spent")
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"budget spent")))
        [upward] = [pipe for pipe in made if pipe.src == 0]
        self.assertEqual((upward.size, upward.grown), (PIPE_SIZE, True))
        yield self.assertNothingLeft()
        self.assertEqual(stats.grown, 0)

    @defer.inlineCallbacks
    def test_quota_refuses_growth(self) -> Any:
        """Past the user's pipe quota the kernel refuses to grow a pipe (EPERM): the relay
        keeps the pipe it has, tries once, and moves every byte."""
        made = self.pipes_made()
        refused: list[int] = []
        real_fcntl = fcntl.fcntl

        def quota(fd: int, cmd: int, arg: int = 0) -> int:
            if cmd == fcntl.F_SETPIPE_SZ and arg > PIPE_SIZE:
                refused.append(fd)
                raise PermissionError(1, "Operation not permitted")
            return real_fcntl(fd, cmd, arg)

        self.patch(splice.fcntl, "fcntl", quota)
        total = 16 * MB
        target = Target(self, lambda s: (recv_digest(s), s.sendall(b"k"))[0])
        yield threads.deferToThread(upload, self.port, target, total, b"quota")
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"quota")))
        self.assertEqual(self.spliced(), 1)
        [upward] = [pipe for pipe in made if pipe.src == 0]
        self.assertEqual((upward.size, upward.grown), (PIPE_SIZE, True))
        self.assertEqual(len(refused), 1)  # one attempt, not one per event
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_small_budget_per_event(self) -> Any:
        """With a per-event budget of one pipeful the relay hands the reactor back after
        every pipeful, from readability and from writability alike, and loses nothing."""
        self.patch(splice, "ROUND_LIMIT", 64 * 1024)
        total = 24 * MB
        target = Target(self, slow_reader, rcvbuf=64 * 1024)
        yield threads.deferToThread(upload, self.port, target, total, b"budget")
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"budget")))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_backpressure_keeps_registrations(self) -> Any:
        """A fast client into a destination that keeps the relay's socket full: the
        direction waits for writability, and each time the destination takes more the same
        event drains the pipe and reads on, so the reactor registrations change a handful of
        times for the whole transfer, not four times per chunk."""
        changes: list[str] = []
        for name in ("addReader", "removeReader", "addWriter", "removeWriter"):
            original = getattr(reactor, name)

            def counted(selectable: Any, _name: str = name, _original: Any = original) -> Any:
                if isinstance(selectable, SocketEnd):
                    changes.append(_name)
                return _original(selectable)

            self.patch(reactor, name, counted)
        total = 32 * MB
        target = Target(self, slow_reader, rcvbuf=64 * 1024)
        yield threads.deferToThread(upload, self.port, target, total, b"pressure")
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"pressure")))
        self.assertEqual(self.spliced(), 1)
        self.assertIn("addWriter", changes)  # it did wait for the destination
        self.assertLess(len(changes), 20, changes)  # the old splicer: 80 here
        yield self.assertNothingLeft()


class GrowthBudgetTests(SynchronousTestCase):
    def budget(self, euid: int) -> float:
        self.patch(splice, "_budget", None)
        with mock.patch.object(splice.os, "geteuid", return_value=euid):
            return splice.growth_budget()

    def test_unprivileged_user(self) -> None:
        """A quarter of the per-user soft pipe quota (the kernel's default 16384 pages:
        16 MiB, room for 21 bulk directions beside new relays' pipes)."""
        with open("/proc/sys/fs/pipe-user-pages-soft") as quota:
            pages = int(quota.read())
        expected = pages * os.sysconf("SC_PAGE_SIZE") / 4 if pages else float("inf")
        self.assertEqual(self.budget(1000), expected)

    def test_root(self) -> None:
        """Root has no pipe quota: no bound."""
        self.assertEqual(self.budget(0), float("inf"))


class EarlySwitchTests(SynchronousTestCase):
    """When a relay is offered the splice: a bulk relay at the first look every SPLICE_EARLY
    after it has moved BULK_HINT bytes, others at SPLICE_AFTER (a short request and answer
    never opens pipes)."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        directlyProvides(self.clock, IReactorFDSet)
        self.checks: list[float] = []
        self.patch(splice, "enabled", lambda: True)
        self.patch(splice.SpliceSwitch, "check",
                   lambda switch: self.checks.append(self.clock.seconds()))

    def relay(self) -> Any:
        """A relay of two plain TCP transports, offered the splice."""
        transports = [mock.Mock(spec=Connection, TLS=False) for _ in range(2)]
        relay = SimpleNamespace(transports=transports, bytes=[0, 0], splice=None,
                                finished=False, eofs=[False, False])
        splice.offer_splice(relay, self.clock)  # type: ignore[arg-type]
        self.assertIsInstance(relay.splice, splice.SpliceSwitch)
        return relay

    def offered(self, moved: int, at: float = 0.0) -> list[float]:
        """When the switch checks a relay that has moved ``moved`` bytes from ``at`` s on
        (the clock steps 0.5 ms at a time)."""
        clock, checks = self.clock, self.checks
        relay = self.relay()
        for step in range(80):
            if step * 0.0005 >= at - 1e-9:
                relay.bytes[1] = moved // 2
                relay.bytes[0] = moved - moved // 2
            clock.advance(0.0005)
        return [round(when, 4) for when in checks]

    def test_bulk_switches_early(self) -> None:
        self.assertEqual(self.offered(splice.BULK_HINT), [splice.SPLICE_EARLY])

    def test_bulk_that_starts_later(self) -> None:
        """A relay made before its client sends (all streams connect, then all send)."""
        self.assertEqual(self.offered(splice.BULK_HINT, at=0.007), [0.008])

    def test_short_exchange_waits(self) -> None:
        self.assertEqual(self.offered(splice.BULK_HINT - 1), [splice.SPLICE_AFTER])

    def test_silent_relay_waits(self) -> None:
        self.assertEqual(self.offered(0), [splice.SPLICE_AFTER])

    def test_one_timer_for_all(self) -> None:
        """Young relays share one timer; a relay that ends leaves; the timer stops with the
        last one."""
        relays = [self.relay() for _ in range(3)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        relays[0].bytes[0] = splice.BULK_HINT
        self.clock.advance(splice.SPLICE_EARLY)
        self.assertEqual(self.checks, [splice.SPLICE_EARLY])  # the bulk one went on
        for relay in relays[1:]:
            relay.splice.stop()  # as Relay.finish does
        self.assertEqual(self.clock.getDelayedCalls(), [])  # at once: no timer outlives it
        self.assertNotIn(self.clock, splice._nursery)
        self.assertEqual(self.checks, [splice.SPLICE_EARLY])


class ImmediateBulkTests(SpliceTestBase):
    @defer.inlineCallbacks
    def test_bulk_from_the_first_byte(self) -> Any:
        """A client that sends 32 MB right after the CONNECT reply: the relay switches to
        splice mid-stream (the bytes through the protocols drained first) and every byte
        arrives in order."""
        total = 32 * MB
        target = Target(self, lambda s: (recv_digest(s), s.sendall(b"k"))[0])

        def client() -> None:
            with socks_connect(self.port, "127.0.0.1", target.port) as sock:
                sock.settimeout(TIMEOUT)
                send_all(sock, total, b"at once")
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)

        yield threads.deferToThread(client)
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (total, digest_of(total, b"at once")))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()
