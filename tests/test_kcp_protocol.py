"""KCPListener / KCPTransport with a fake clock and an in-memory UDP transport."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol, task
from twisted.trial.unittest import SynchronousTestCase

from vtwist.testing.doubles import FakeUDPPort
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.protocol import KCPListener, make_packer
from vtwist.transport.kcp.segment import AckSegment, parse_segments
from vtwist.transport.kcp.session import Session, State

PEER = ("127.0.0.1", 40000)


class App(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason


class ListenerHarness:
    def __init__(self, cfg: KCPConfig | None = None) -> None:
        self.cfg = cfg or KCPConfig(header_type="dtls")
        self.clock = task.Clock()
        self.apps: list[App] = []

        def build() -> App:
            a = App()
            self.apps.append(a)
            return a

        self.listener = KCPListener(self.cfg, protocol.Factory.forProtocol(build), self.clock)
        self.udp = FakeUDPPort(port=9000)
        self.listener.makeConnection(self.udp)
        self.peer = Session(0x77, self.cfg, make_packer(self.cfg), 0.0)

    def peer_send(self) -> None:
        for d in self.peer.datagrams_to_send(self.clock.seconds()):
            self.listener.datagramReceived(d, PEER)

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def replies(self) -> list:
        out = []
        for d, addr in self.udp.written:
            self.assertAddr(addr)
            out.extend(parse_segments(self.peer.packer.unpack(d)))
        self.udp.written.clear()
        return out

    @staticmethod
    def assertAddr(addr: Any) -> None:
        assert addr == PEER, addr


class ListenerTests(SynchronousTestCase):
    def test_session_created_and_data_delivered(self) -> None:
        h = ListenerHarness()
        h.peer.write(b"hello kcp")
        h.peer_send()
        h.clock.advance(0)
        self.assertEqual(len(h.listener.sessions), 1)
        self.assertEqual(bytes(h.apps[0].data), b"hello kcp")
        acks = [s for s in h.replies() if isinstance(s, AckSegment)]
        self.assertEqual([list(a.numbers) for a in acks], [[0]])

    def test_dead_peer_times_out_and_frees_everything(self) -> None:
        h = ListenerHarness()
        h.peer.write(b"x")
        h.peer_send()
        h.clock.advance(0)
        conn = next(iter(h.listener.sessions.values()))
        h.run(70, step=0.5)
        self.assertEqual(h.listener.sessions, {})
        self.assertEqual(conn.session.state, State.TERMINATED)
        self.assertEqual(h.apps[0].reason.type.__name__, "ConnectionLost")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertTrue(conn.terminated.called)

    def test_failed_auth_counted_and_dropped(self) -> None:
        h = ListenerHarness(KCPConfig(header_type="dtls", seed="a"))
        other = make_packer(KCPConfig(header_type="dtls", seed="b"))
        from vtwist.transport.kcp.segment import encode_data

        h.listener.datagramReceived(other.pack(encode_data(1, 0, 0, 0, 0, b"x")), PEER)
        h.listener.datagramReceived(b"short", PEER)
        self.assertEqual(h.listener.auth_failures, 2)
        self.assertEqual(h.listener.sessions, {})
        self.assertEqual(h.udp.written, [])

    def test_paused_reader_shrinks_advertised_window(self) -> None:
        cfg = KCPConfig(downlink_capacity=1, read_buffer_bytes=0)  # window 38 segments
        n = cfg.receiving_window - 8
        h = ListenerHarness(cfg)
        h.peer.write(b"a")
        h.peer_send()
        h.clock.advance(0)
        conn = next(iter(h.listener.sessions.values()))
        conn.pauseProducing()
        h.replies()
        h.peer.write(b"b" * cfg.mss * n)
        h.peer.receive_segments([AckSegment(0x77, 0, 10_000, 1, 0, [0])], h.clock.seconds())
        h.peer_send()
        h.clock.advance(0)
        acks = [s for s in h.replies() if isinstance(s, AckSegment)]
        self.assertTrue(acks)
        self.assertEqual(acks[-1].receiving_next, 1)
        self.assertEqual(acks[-1].receiving_window, 1 + cfg.receiving_window)
        self.assertEqual(len(h.apps[0].data), 1)
        conn.resumeProducing()
        h.clock.advance(0)
        self.assertEqual(len(h.apps[0].data), 1 + cfg.mss * n)
        acks = [s for s in h.replies() if isinstance(s, AckSegment)]
        self.assertEqual(acks[-1].receiving_next, 1 + n)
        self.assertEqual(acks[-1].receiving_window, 1 + n + cfg.receiving_window)

    def test_close_from_app_sends_terminate_and_forgets(self) -> None:
        h = ListenerHarness()
        h.peer.write(b"x")
        h.peer_send()
        h.clock.advance(0)
        conn = next(iter(h.listener.sessions.values()))
        h.replies()
        conn.loseConnection()
        h.clock.advance(0)
        # the peer's una for #0 is unknown to the server, but the server has nothing to send
        segs = h.replies()
        self.assertIn(2, [s.cmd for s in segs])
        self.assertEqual(h.apps[0].reason.type.__name__, "ConnectionDone")
        h.run(10, step=0.5)
        self.assertEqual(h.listener.sessions, {})
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_dataReceived_error_aborts_session(self) -> None:
        h = ListenerHarness()

        def boom(data: bytes) -> None:
            raise ZeroDivisionError("app bug")

        h.peer.write(b"x")
        h.peer_send()
        conn = next(iter(h.listener.sessions.values()))
        h.apps[0].dataReceived = boom  # type: ignore[method-assign]
        h.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(conn.session.state, State.TERMINATED)
        self.assertTrue(h.apps[0].reason.check(ZeroDivisionError))
        self.assertIn(2, [s.cmd for s in h.replies()], "the peer is told with TERMINATE")
        self.assertEqual(h.listener.sessions, {})
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertTrue(conn.terminated.called)

    def test_connectionMade_error_aborts_session(self) -> None:
        class BadApp(App):
            def connectionMade(self) -> None:
                raise ZeroDivisionError("app bug")

        h = ListenerHarness()
        h.listener.factory = protocol.Factory.forProtocol(BadApp)
        h.peer.write(b"x")
        h.peer_send()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(h.listener.sessions, {}, "no session left without a timer")
        self.assertIn(2, [s.cmd for s in h.replies()], "the peer is told with TERMINATE")
        h.clock.advance(0)
        self.assertEqual(h.clock.getDelayedCalls(), [])
