"""The supervisor's UDP sockets for its workers (:mod:`vtwist.app.udpslots`), in one process:
the supervisor's side answers over a real channel pair, the worker's side asks."""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import free_port
from vtwist.app import udpslots
from vtwist.transport import reuseport


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _bare_process(test: SynchronousTestCase) -> int:
    """A child process with no descriptor past stderr open (a "worker" that holds no
    socket), once it has closed them; killed at the test's end."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.closerange(3, ready_w)
            os.closerange(ready_w + 1, 4096)
            os.write(ready_w, b"x")
            os.close(ready_w)
            threading.Event().wait(30)
        finally:
            os._exit(0)
    os.close(ready_w)
    test.addCleanup(lambda: (os.kill(pid, 9), os.waitpid(pid, 0)))
    try:
        os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    return pid


class SupervisorSideTests(SynchronousTestCase):
    """:class:`udpslots.UDPSlots` without a reactor loop (``answer`` and ``sweep`` directly)."""

    def setUp(self) -> None:
        self.slots = udpslots.UDPSlots(reactor, 3)
        self.addCleanup(self.slots.close)
        self.port = free_port(udp_too=True)

    def ask(self, index: int, request: Any) -> tuple[dict[str, Any], int]:
        return self.slots.answer(index, json.dumps(request).encode())

    def test_first_ask_binds_the_whole_group_in_order(self) -> None:
        """Worker 1 asks first: a socket for every index exists, each bound to the port with
        SO_REUSEPORT, and worker 1 gets its own."""
        answer, fd = self.ask(1, {"id": 7, "udp": ["127.0.0.1", self.port]})
        self.assertEqual(answer, {"id": 7, "ok": True})
        group = self.slots.held[("127.0.0.1", self.port)]
        self.assertEqual(len(group), 3)
        self.assertEqual(fd, group[1].fileno())
        for sock in group:
            self.assertEqual(sock.getsockname(), ("127.0.0.1", self.port))
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)

    def test_same_index_gets_the_same_socket(self) -> None:
        """A restarted worker (same index) gets the socket its predecessor had; another
        index gets another one."""
        _, first = self.ask(0, {"id": 1, "udp": ["127.0.0.1", self.port]})
        _, again = self.ask(0, {"id": 2, "udp": ["127.0.0.1", self.port]})
        _, other = self.ask(2, {"id": 3, "udp": ["127.0.0.1", self.port]})
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)

    def test_bad_requests_get_an_error(self) -> None:
        """Malformed requests: an error answer, no descriptor, nothing held."""
        for packet in (b"not json", b"[]", b"{}", json.dumps({"udp": "x"}).encode(),
                       json.dumps({"udp": [1, 2]}).encode(),
                       json.dumps({"udp": ["127.0.0.1", 0]}).encode(),
                       json.dumps({"udp": ["127.0.0.1", 70000]}).encode(),
                       json.dumps({"udp": ["127.0.0.1", "53"]}).encode()):
            answer, fd = self.slots.answer(0, packet)
            self.assertIn("error", answer, packet)
            self.assertEqual(fd, -1)
        answer, fd = self.ask(5, {"udp": ["127.0.0.1", self.port]})  # no such index
        self.assertIn("error", answer)
        self.assertEqual(self.slots.held, {})

    def test_port_that_cannot_be_bound(self) -> None:
        """A port another socket holds without SO_REUSEPORT: an error answer naming why."""
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        answer, fd = self.ask(0, {"udp": ["127.0.0.1", busy.getsockname()[1]]})
        self.assertIn("in use", answer["error"])
        self.assertEqual(fd, -1)
        self.assertEqual(self.slots.held, {})

    def test_group_that_cannot_be_bound_whole_is_not_kept(self) -> None:
        """The second socket of the group fails to bind: the first is closed again (a held
        socket nobody reads would swallow its share of the flows)."""
        from twisted.internet.error import CannotListenError

        made: list[socket.socket] = []
        real = reuseport.bound_socket

        def second_fails(kind: Any, port: int, interface: str = "") -> socket.socket:
            if made:
                raise CannotListenError(interface, port, OSError("no more"))
            made.append(real(kind, port, interface))
            return made[0]

        self.patch(reuseport, "bound_socket", second_fails)
        answer, fd = self.ask(0, {"udp": ["127.0.0.1", self.port]})
        self.assertIn("no more", answer["error"])
        self.assertEqual(self.slots.held, {})
        self.assertEqual(made[0].fileno(), -1)

    def test_sweep_closes_what_a_running_worker_dropped(self) -> None:
        """Index 0's socket is open in "its worker" (this process holds a copy), index 1's
        worker holds nothing, index 2 is not running: only index 1's socket closes."""
        self.ask(0, {"udp": ["127.0.0.1", self.port]})
        group = self.slots.held[("127.0.0.1", self.port)]
        holder = socket.socket(fileno=os.dup(group[0].fileno()))
        self.addCleanup(holder.close)
        helper = _bare_process(self)
        closed_by_sweep = self.slots.sweep({0: os.getpid(), 1: helper})
        self.assertEqual(closed_by_sweep, [])
        self.assertIsNotNone(group[0])
        self.assertIsNone(group[1])
        self.assertIsNotNone(group[2])

    def test_sweep_drops_a_port_no_worker_uses(self) -> None:
        """Every running worker dropped the port: all its sockets close and the port is
        free to bind again."""
        slots = udpslots.UDPSlots(reactor, 1)
        self.addCleanup(slots.close)
        slots.answer(0, json.dumps({"udp": ["127.0.0.1", self.port]}).encode())
        self.assertEqual(slots.sweep({0: os.getpid()}), [])  # this process holds it
        helper = _bare_process(self)
        self.assertEqual(slots.sweep({0: helper}), [("127.0.0.1", self.port)])
        self.assertEqual(slots.held, {})
        plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        plain.bind(("127.0.0.1", self.port))  # nothing holds it any more
        plain.close()


class ChannelTests(TestCase):
    """The worker's :func:`udpslots.held_socket` against the supervisor's channel in the
    reactor (the worker's blocking ask runs in a thread, as the reactor must answer)."""

    def setUp(self) -> None:
        self.slots = udpslots.UDPSlots(reactor, 2)
        self.addCleanup(self.slots.close)
        self.addCleanup(udpslots.uninstall)
        self.port = free_port(udp_too=True)

    def install(self, index: int) -> None:
        theirs = self.slots.channel(index)
        self.assertTrue(udpslots.install(os.dup(theirs.fileno())))
        theirs.close()

    def test_worker_receives_its_socket(self) -> None:
        """The descriptor arrives (SCM_RIGHTS): the same socket as the supervisor's."""
        self.install(1)
        from twisted.internet.threads import deferToThread

        def check(sock: socket.socket | None) -> None:
            self.assertIsNotNone(sock)
            assert sock is not None
            self.addCleanup(sock.close)
            self.assertEqual(_inode(sock), _inode(self.slots.held[("127.0.0.1",
                                                                   self.port)][1]))
            self.assertEqual(sock.type, socket.SOCK_DGRAM)

        return deferToThread(udpslots.held_socket, "127.0.0.1", self.port).addCallback(check)

    def test_error_answer_means_bind_here(self) -> None:
        """The supervisor cannot bind the port: None (the worker binds it itself)."""
        self.install(0)
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        from twisted.internet.threads import deferToThread

        d = deferToThread(udpslots.held_socket, "127.0.0.1", busy.getsockname()[1])
        return d.addCallback(self.assertIsNone)


class WorkerSideTests(SynchronousTestCase):
    """The worker's side with a hand-driven supervisor end."""

    def setUp(self) -> None:
        self.mine, theirs = udpslots.channel_pair()
        self.addCleanup(self.mine.close)
        self.assertTrue(udpslots.install(theirs.detach()))
        self.addCleanup(udpslots.uninstall)

    def test_no_channel(self) -> None:
        """Not a worker of a supervisor with slots: None, and install refuses a non-channel."""
        udpslots.uninstall()
        self.assertIsNone(udpslots.held_socket("127.0.0.1", 9))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            self.assertFalse(udpslots.install(s.fileno()))
            s.getsockname()  # still open: install left it alone
        self.assertFalse(udpslots.install(9999))

    def test_late_answer_is_dropped(self) -> None:
        """An answer to an earlier request (it timed out) is skipped, its descriptor closed;
        the answer with this request's id is taken."""
        stale = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stale.close)
        self.addCleanup(fresh.close)

        def supervisor() -> None:
            request = json.loads(self.mine.recv(4096))
            socket.send_fds(self.mine, [json.dumps({"id": request["id"] - 1, "ok": True})
                                        .encode()], [stale.fileno()])
            socket.send_fds(self.mine, [json.dumps({"id": request["id"], "ok": True})
                                        .encode()], [fresh.fileno()])

        thread = threading.Thread(target=supervisor)
        thread.start()
        got = udpslots.held_socket("127.0.0.1", 9)
        thread.join(10)
        self.assertIsNotNone(got)
        assert got is not None
        self.addCleanup(got.close)
        self.assertEqual(_inode(got), _inode(fresh))

    def test_supervisor_gone(self) -> None:
        """The supervisor's end closed: None at once, no exception."""
        self.mine.close()
        self.assertIsNone(udpslots.held_socket("127.0.0.1", 9))

    def test_no_answer_in_time(self) -> None:
        """No answer within the timeout: None (the worker binds the port itself)."""
        self.patch(udpslots, "_channel", udpslots._channel)
        assert udpslots._channel is not None
        udpslots._channel.settimeout(0.05)
        self.assertIsNone(udpslots.held_socket("127.0.0.1", 9))


class ListenUDPTests(SynchronousTestCase):
    """:func:`reuseport.listen_udp` in a worker takes the held socket when there is one."""

    def tearDown(self) -> None:
        reuseport.enable(False)

    def test_held_socket_is_adopted(self) -> None:
        port = free_port(udp_too=True)
        held = reuseport.bound_socket(socket.SOCK_DGRAM, port, "127.0.0.1")
        self.addCleanup(held.close)
        asked: list[tuple[str, int]] = []

        def give(interface: str, number: int) -> socket.socket:
            asked.append((interface, number))
            return socket.socket(fileno=os.dup(held.fileno()))

        reuseport.enable(held_udp=give)
        from twisted.internet.protocol import DatagramProtocol

        listening = reuseport.listen_udp(reactor, port, DatagramProtocol(), "127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.assertEqual(asked, [("127.0.0.1", port)])
        self.assertEqual(os.fstat(listening.fileno()).st_ino, _inode(held))

    def test_no_held_socket_binds_here(self) -> None:
        port = free_port(udp_too=True)
        reuseport.enable(held_udp=lambda interface, number: None)
        from twisted.internet.protocol import DatagramProtocol

        listening = reuseport.listen_udp(reactor, port, DatagramProtocol(), "127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.assertEqual(listening.getHost().port, port)


class SweepScheduleTests(SynchronousTestCase):
    """:meth:`udpslots.UDPSlots.sweep_later` (what a reload calls) on a fake clock."""

    def test_sweep_after_the_delay_with_the_pids_then(self) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        slots = udpslots.UDPSlots(clock, 1)
        self.addCleanup(slots.close)
        port = free_port(udp_too=True)
        slots.answer(0, json.dumps({"udp": ["127.0.0.1", port]}).encode())
        running: dict[int, int] = {}
        slots.sweep_later(lambda: running)
        slots.sweep_later(lambda: running)  # a second reload: one sweep
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        running[0] = _bare_process(self)  # by then the worker runs without the socket
        clock.advance(udpslots.SWEEP_DELAY - 0.1)
        self.assertIn(("127.0.0.1", port), slots.held)
        clock.advance(0.1)
        self.assertEqual(slots.held, {})
        self.assertEqual(clock.getDelayedCalls(), [])
